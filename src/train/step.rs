//! One loss-and-gradient pass of the policy over a batch of sampled sequences: the transformer's
//! packed forward → log-probs and entropy of the response tokens (the chunked lm_head op) → loss
//! → back through the log-prob head and the decoder into a gradient set. Generic over the ops,
//! like the transformer: the same code runs on every backend that has the training ops.
//!
//! A sample is its prompt followed by its valid response (cut after the first EOS; tokens past
//! it could not change anything earlier, attention being causal). Response token j (at position
//! p ≥ prompt_len) is scored by the hidden state at p − 1.

use super::grpo::{grpo_loss, sft_loss, GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
use crate::model::{ModelConfig, Save, Transformer};
use crate::ops::cpu::logprob::DEFAULT_VOCAB_CHUNK;
use crate::ops::{LogProbShape, Ops, TokenLogProbs};
use anyhow::{bail, Result};

/// One sequence of the batch: `tokens[..prompt_len]` is the prompt, the rest the response.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub tokens: &'a [u32],
    pub prompt_len: usize,
}

impl Sample<'_> {
    pub fn response_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// How the pass runs.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// Logits are divided by this before the softmax (DeepScaleR: 0.6, SFT: 1.0).
    pub temperature: f32,
    /// Vocabulary columns per lm_head chunk.
    pub vocab_chunk: usize,
    /// Per-layer activation recomputation.
    pub checkpoint: bool,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { temperature: 0.6, vocab_chunk: DEFAULT_VOCAB_CHUNK, checkpoint: false }
    }
}

/// Rows of the packed batch that score response tokens, and those tokens.
fn response_rows(samples: &[Sample]) -> Result<(Vec<usize>, Vec<u32>, Vec<usize>)> {
    let (mut rows, mut targets, mut lens) = (Vec::new(), Vec::new(), Vec::new());
    let mut start = 0;
    for s in samples {
        if s.prompt_len == 0 || s.prompt_len > s.tokens.len() {
            bail!("prompt_len {} must be in 1..={} (the first token has no prediction)", s.prompt_len, s.tokens.len());
        }
        for p in s.prompt_len..s.tokens.len() {
            rows.push(start + p - 1);
            targets.push(s.tokens[p]);
        }
        lens.push(s.response_len());
        start += s.tokens.len();
    }
    Ok((rows, targets, lens))
}

fn shape(c: &ModelConfig, o: &PassOptions) -> LogProbShape {
    LogProbShape { hidden: c.hidden_size, vocab: c.vocab_size, temperature: o.temperature, chunk: o.vocab_chunk }
}

/// Log-probs and entropies of every response token (concatenated over samples), forward only:
/// the old-policy and reference log-probs of a GRPO step.
pub fn response_logprobs<O: Ops>(model: &Transformer<O>, samples: &[Sample], o: &PassOptions) -> Result<TokenLogProbs> {
    let (rows, targets, _) = response_rows(samples)?;
    let seqs: Vec<&[u32]> = samples.iter().map(|s| s.tokens).collect();
    let fwd = model.forward_packed(&seqs, Save::Nothing)?;
    model.ops.logprobs(&fwd.hidden, &rows, &targets, model.lm_head(), shape(&model.config, o))
}

/// The gradient of an arbitrary per-token objective: `loss(logp, entropy, seq_lens)` returns
/// its report and ∂/∂logp, ∂/∂entropy per response token; gradients accumulate into `grads`.
pub fn policy_backward<O: Ops, R>(
    model: &Transformer<O>,
    samples: &[Sample],
    o: &PassOptions,
    grads: &mut O::Params,
    loss: impl FnOnce(&TokenLogProbs, &[usize]) -> (R, Vec<f32>, Option<Vec<f32>>),
) -> Result<R> {
    policy_backward_with(model, samples, o, grads, loss, &mut |_, _| Ok(()))
}

/// Called with a layer's index as soon as its parameter gradients are final (see
/// `Transformer::backward_with`).
pub type LayerDone<'a, P> = &'a mut dyn FnMut(usize, &mut P) -> Result<()>;

/// `policy_backward` with a hook for each finished layer.
pub fn policy_backward_with<O: Ops, R>(
    model: &Transformer<O>,
    samples: &[Sample],
    o: &PassOptions,
    grads: &mut O::Params,
    loss: impl FnOnce(&TokenLogProbs, &[usize]) -> (R, Vec<f32>, Option<Vec<f32>>),
    layer_done: LayerDone<O::Params>,
) -> Result<R> {
    let ops = &model.ops;
    let (rows, targets, lens) = response_rows(samples)?;
    let seqs: Vec<&[u32]> = samples.iter().map(|s| s.tokens).collect();
    let fwd = model.forward_packed(&seqs, if o.checkpoint { Save::Checkpoint } else { Save::All })?;
    let sh = shape(&model.config, o);
    let lp = ops.logprobs(&fwd.hidden, &rows, &targets, model.lm_head(), sh)?;
    let (report, d_logp, d_entropy) = loss(&lp, &lens);
    let mut d_hidden = ops.zeros(fwd.rows * model.config.hidden_size)?;
    let d_lm_head = ops.param_mut(grads, model.table().lm_head());
    ops.logprobs_backward(&fwd.hidden, &rows, &targets, model.lm_head(), &lp, &d_logp, d_entropy.as_deref(), sh, &mut d_hidden, d_lm_head)?;
    model.backward_with(&fwd, &d_hidden, grads, layer_done)?;
    Ok(report)
}

/// Per-token GRPO inputs that come from outside the current policy.
pub struct GrpoInputs<'a> {
    /// One advantage per response token (a sequence's advantage broadcast to its tokens).
    pub advantages: &'a [f32],
    pub old_logp: &'a [f32],
    pub ref_logp: Option<&'a [f32]>,
}

/// GRPO loss and its gradient for a batch (accumulated into `grads`).
pub fn grpo_backward<O: Ops>(
    model: &Transformer<O>,
    samples: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    o: &PassOptions,
    grads: &mut O::Params,
) -> Result<GrpoOutput> {
    grpo_backward_scaled(model, samples, inputs, cfg, o, 1.0, grads)
}

/// `grpo_backward` with the per-token gradients multiplied by `grad_scale` before the backward
/// pass (a micro-batch's share of its mini-batch); the returned loss parts are unscaled.
#[allow(clippy::too_many_arguments)]
pub fn grpo_backward_scaled<O: Ops>(
    model: &Transformer<O>,
    samples: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    o: &PassOptions,
    grad_scale: f64,
    grads: &mut O::Params,
) -> Result<GrpoOutput> {
    grpo_backward_hooked(model, samples, inputs, cfg, o, grad_scale, grads, &mut |_, _| Ok(()))
}

/// `grpo_backward_scaled` with a hook for each finished layer (`LayerDone`).
#[allow(clippy::too_many_arguments)]
pub fn grpo_backward_hooked<O: Ops>(
    model: &Transformer<O>,
    samples: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    o: &PassOptions,
    grad_scale: f64,
    grads: &mut O::Params,
    layer_done: LayerDone<O::Params>,
) -> Result<GrpoOutput> {
    policy_backward_with(model, samples, o, grads, |lp, lens| {
        let out = grpo_loss(
            cfg,
            &GrpoTokens {
                seq_lens: lens,
                logp: &lp.logp,
                entropy: &lp.entropy,
                old_logp: inputs.old_logp,
                ref_logp: inputs.ref_logp,
                advantages: inputs.advantages,
            },
        );
        // × 1.0 is exact, so the unscaled gradient is bit-identical.
        let scaled = |d: &[f32]| -> Vec<f32> { d.iter().map(|&x| (x as f64 * grad_scale) as f32).collect() };
        let (dl, de) = (scaled(&out.d_logp), scaled(&out.d_entropy));
        (out, dl, Some(de))
    }, layer_done)
}

/// SFT cross-entropy of the response tokens given the prompts (`o.temperature` should be 1).
pub fn sft_backward<O: Ops>(model: &Transformer<O>, samples: &[Sample], agg: LossAgg, o: &PassOptions, grads: &mut O::Params) -> Result<f64> {
    policy_backward(model, samples, o, grads, |lp, lens| {
        let (loss, d) = sft_loss(&lp.logp, lens, agg);
        (loss, d, None)
    })
}

/// Broadcasts one advantage per sample to each of its response tokens.
pub fn broadcast_advantages(samples: &[Sample], per_seq: &[f32]) -> Vec<f32> {
    samples.iter().zip(per_seq).flat_map(|(s, &a)| std::iter::repeat_n(a, s.response_len())).collect()
}
