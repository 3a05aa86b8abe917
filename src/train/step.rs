//! One loss-and-gradient pass of the policy over a batch of sampled sequences: training forward
//! → log-probs and entropy of the response tokens (chunked lm_head) → loss → back through the
//! log-prob head and the decoder into a `Grads`.
//!
//! A sample is its prompt followed by its valid response (cut after the first EOS; tokens past
//! it could not change anything earlier, attention being causal). Response token j (at position
//! p ≥ prompt_len) is scored by the hidden state at p − 1.

use super::grads::Grads;
use super::grpo::{grpo_loss, sft_loss, GrpoConfig, GrpoOutput, GrpoTokens, LossAgg};
use super::logprob::{logprobs_backward, logprobs_forward, LogProbShape, TokenLogProbs, DEFAULT_VOCAB_CHUNK};
use super::model_backward::{train_backward, train_forward, Save};
use crate::model::config::ModelConfig;
use crate::model::weights::ModelWeights;
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

fn gather(hidden: &[f32], rows: &[usize], h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * h);
    for &r in rows {
        out.extend_from_slice(&hidden[r * h..(r + 1) * h]);
    }
    out
}

fn shape(c: &ModelConfig, o: &PassOptions) -> LogProbShape {
    LogProbShape { hidden: c.hidden_size, vocab: c.vocab_size, temperature: o.temperature, chunk: o.vocab_chunk }
}

/// Log-probs and entropies of every response token (concatenated over samples), forward only:
/// the old-policy and reference log-probs of a GRPO step.
pub fn response_logprobs(c: &ModelConfig, w: &ModelWeights, samples: &[Sample], o: &PassOptions) -> Result<TokenLogProbs> {
    let (rows, targets, _) = response_rows(samples)?;
    let seqs: Vec<&[u32]> = samples.iter().map(|s| s.tokens).collect();
    let fwd = train_forward(c, w, &seqs, Save::Nothing)?;
    let hid = gather(&fwd.hidden, &rows, c.hidden_size);
    Ok(logprobs_forward(&hid, w.lm_head(), &targets, shape(c, o)))
}

/// The gradient of an arbitrary per-token objective: `loss(logp, entropy, seq_lens)` returns
/// its report and ∂/∂logp, ∂/∂entropy per response token; gradients accumulate into `grads`.
pub fn policy_backward<R>(
    c: &ModelConfig,
    w: &ModelWeights,
    samples: &[Sample],
    o: &PassOptions,
    grads: &mut Grads,
    loss: impl FnOnce(&TokenLogProbs, &[usize]) -> (R, Vec<f32>, Option<Vec<f32>>),
) -> Result<R> {
    let h = c.hidden_size;
    let (rows, targets, lens) = response_rows(samples)?;
    let seqs: Vec<&[u32]> = samples.iter().map(|s| s.tokens).collect();
    let fwd = train_forward(c, w, &seqs, if o.checkpoint { Save::Checkpoint } else { Save::All })?;
    let hid = gather(&fwd.hidden, &rows, h);
    let sh = shape(c, o);
    let lp = logprobs_forward(&hid, w.lm_head(), &targets, sh);
    let (report, d_logp, d_entropy) = loss(&lp, &lens);
    let mut d_hid = vec![0f32; hid.len()];
    logprobs_backward(&hid, w.lm_head(), &targets, &lp, &d_logp, d_entropy.as_deref(), sh, &mut d_hid, grads.lm_head_mut());
    let mut d_hidden = vec![0f32; fwd.hidden.len()];
    for (i, &r) in rows.iter().enumerate() {
        d_hidden[r * h..(r + 1) * h].copy_from_slice(&d_hid[i * h..(i + 1) * h]);
    }
    train_backward(c, w, &fwd, &d_hidden, grads)?;
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
pub fn grpo_backward(
    c: &ModelConfig,
    w: &ModelWeights,
    samples: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    o: &PassOptions,
    grads: &mut Grads,
) -> Result<GrpoOutput> {
    grpo_backward_scaled(c, w, samples, inputs, cfg, o, 1.0, grads)
}

/// `grpo_backward` with the per-token gradients multiplied by `grad_scale` before the backward
/// pass (a micro-batch's share of its mini-batch); the returned loss parts are unscaled.
#[allow(clippy::too_many_arguments)]
pub fn grpo_backward_scaled(
    c: &ModelConfig,
    w: &ModelWeights,
    samples: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    o: &PassOptions,
    grad_scale: f64,
    grads: &mut Grads,
) -> Result<GrpoOutput> {
    policy_backward(c, w, samples, o, grads, |lp, lens| {
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
    })
}

/// SFT cross-entropy of the response tokens given the prompts (`o.temperature` should be 1).
pub fn sft_backward(c: &ModelConfig, w: &ModelWeights, samples: &[Sample], agg: LossAgg, o: &PassOptions, grads: &mut Grads) -> Result<f64> {
    policy_backward(c, w, samples, o, grads, |lp, lens| {
        let (loss, d) = sft_loss(&lp.logp, lens, agg);
        (loss, d, None)
    })
}

/// Broadcasts one advantage per sample to each of its response tokens.
pub fn broadcast_advantages(samples: &[Sample], per_seq: &[f32]) -> Vec<f32> {
    samples.iter().zip(per_seq).flat_map(|(s, &a)| std::iter::repeat_n(a, s.response_len())).collect()
}
