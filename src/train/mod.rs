//! The trainer's math on the CPU backend: gradients of the whole model under DeepScaleR's GRPO
//! objective (and SFT), and the AdamW update — the reference the GPU kernels are checked
//! against, proven against PyTorch by `tests/train_grads.rs` (fixtures from
//! `scripts/make_grad_fixtures.py`).
//!
//! Map: `model_backward` (training forward over whole packed sequences, saving or recomputing
//! activations, and its backward), `logprob` (chunked fused lm_head + log-softmax + entropy at a
//! temperature, forward and backward), `grpo` (advantages, GRPO loss variants, SFT loss),
//! `step` (forward → loss → backward for a batch), `grads` (the gradient buffers, named
//! iteration), `adamw` (optimizer, clipping, schedule). The per-op backward kernels live in
//! `backend::cpu::backward`.
pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod default_run;
pub mod grads;
pub mod grpo;
pub mod logprob;
pub mod metrics;
pub mod model_backward;
pub mod plot;
pub mod rollout;
pub mod step;
pub mod trainer;
pub mod update;
pub mod validation;

pub use adamw::{AdamW, AdamWConfig, LrSchedule, StepReport};
pub use grads::{clone_weights, named_params, named_params_mut, Grads};
pub use grpo::{grpo_advantages, grpo_loss, sft_loss, valid_response_len, GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
pub use logprob::{logprobs_backward, logprobs_forward, LogProbShape, TokenLogProbs};
pub use model_backward::{train_backward, train_forward, Save, TrainForward};
pub use step::{broadcast_advantages, grpo_backward, policy_backward, response_logprobs, sft_backward, GrpoInputs, PassOptions, Sample};
