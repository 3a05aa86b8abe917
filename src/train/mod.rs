//! The GRPO trainer (DeepScaleR / verl's recipe). The model's forward and backward are the one
//! transformer's (`model::transformer`, generic over the ops); what lives here is the training
//! math around it and the run loop:
//!
//! - the math: `step` (forward → log-probs → loss → backward for a batch of samples), `grpo`
//!   (advantages, GRPO loss variants, SFT loss), `adamw` (optimizer host logic, clipping,
//!   schedule; the per-element update is an op);
//! - the loop: `trainer` (one step: `rollout` → advantages and log-probs → `update` →
//!   `validation` → metrics and checkpoints), with context `config` stages;
//! - io: `data` (training set with a resumable cursor), `checkpoint` (atomic Hugging Face
//!   directories), `metrics` (the JSONL log), `plot` (charts);
//! - `data_parallel`: the step across ranks (shares of the batch, the gradient all-reduce);
//! - `default_run`: the embedded default of `scalerl train` (a tiny model from scratch).
//!
//! Proven against PyTorch by `tests/train_grads.rs` (fixtures from
//! `scripts/make_grad_fixtures.py`) and by finite differences (`tests/train_finite_diff.rs`).
pub mod adamw;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod data_parallel;
pub mod default_run;
pub mod grpo;
pub mod metrics;
pub mod plan;
pub mod plot;
pub mod policy;
pub mod rollout;
pub mod step;
pub mod trainer;
pub mod update;
pub mod validation;

pub use adamw::{global_norm, AdamW, AdamWConfig, LrSchedule, OptimizerState, StepReport};
pub use policy::Policy;
pub use grpo::{grpo_advantages, grpo_loss, sft_loss, valid_response_len, GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
pub use step::{broadcast_advantages, grpo_backward, policy_backward, response_logprobs, sft_backward, GrpoInputs, PassOptions, Sample};
