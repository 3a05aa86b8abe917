//! Phase 3 of a GRPO step: the PPO updates. For `ppo_epochs`, the batch's prompts are shuffled
//! (seeded by (seed, step, epoch)) into mini-batches of `mini_batch_prompts` prompts with all
//! their samples; each mini-batch gets `grpo_backward` and one AdamW update.
//!
//! A non-finite loss or gradient norm skips the update: the weights and the AdamW moments stay
//! untouched, the learning-rate schedule still advances, and the skip is counted in the step's
//! metrics (`skipped_updates`). Micro-batching (`micro_seqs` > 0) runs a mini-batch in passes of
//! that many sequences whose gradients are scaled to sum to the whole mini-batch's.

use super::adamw::{AdamW, StepReport};
use super::data::epoch_order;
use super::grpo::{GrpoConfig, LossAgg};
use super::step::{broadcast_advantages, grpo_backward_scaled, GrpoInputs, PassOptions, Sample};
use crate::model::Transformer;
use crate::ops::Ops;
use crate::util::mix;
use anyhow::Result;

/// The loss parts of one mini-batch (as `GrpoOutput`, without the gradients).
#[derive(Debug, Clone, Copy, Default)]
pub struct MiniBatchLoss {
    pub loss: f64,
    pub pg_loss: f64,
    pub kl_loss: f64,
    pub entropy_mean: f64,
    pub clip_frac: f64,
    pub approx_kl: f64,
}

/// What the updates of one step did: loss parts and grad norm averaged over the applied updates.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    pub pg_loss: f64,
    pub kl: f64,
    pub entropy: f64,
    pub clip_frac: f64,
    pub approx_kl: f64,
    pub grad_norm: f64,
    /// The learning rate of the last update attempted.
    pub lr: f64,
    pub updates: usize,
    /// Updates skipped for a non-finite loss or gradient.
    pub skipped: usize,
}

/// One AdamW update from `grads`, unless the loss or the gradient is not finite: then nothing
/// but the optimizer's step counter changes (so the schedule stays aligned with the steps) and
/// the report says `skipped`.
pub fn apply_update<O: Ops>(optim: &mut AdamW<O>, model: &mut Transformer<O>, grads: &mut O::Params, loss: f64) -> Result<StepReport> {
    if loss.is_finite() {
        return optim.step(&model.ops, &mut model.weights, grads);
    }
    let lr = optim.cfg.schedule.lr_at(optim.steps);
    optim.steps += 1;
    Ok(StepReport { grad_norm: f64::NAN, lr, skipped: true })
}

/// The step's samples and what the loss needs of them (sample `i` answers prompt `i / n`).
pub struct UpdateBatch<'a> {
    pub samples: &'a [Sample<'a>],
    pub n: usize,
    pub advantages: &'a [f32],
    /// Per sample, the response tokens' log-probs under the policy before the update…
    pub old_logp: &'a [Vec<f32>],
    /// …and under the reference model (None when the KL term is off).
    pub ref_logp: Option<&'a [Vec<f32>]>,
}

/// How the updates are cut.
pub struct UpdatePlan<'a> {
    pub seed: u64,
    pub step: usize,
    pub ppo_epochs: usize,
    pub mini_batch_prompts: usize,
    pub micro_batch_seqs: usize,
    pub grpo: &'a GrpoConfig,
    pub pass: &'a PassOptions,
}

/// Runs the step's PPO epochs of mini-batch updates on `model`.
pub fn ppo_updates<O: Ops>(model: &mut Transformer<O>, optim: &mut AdamW<O>, b: &UpdateBatch, plan: &UpdatePlan) -> Result<UpdateStats> {
    let prompts = b.samples.len() / b.n;
    let mut grads = model.ops.zeros_params(model.table())?;
    let mut s = UpdateStats::default();
    for epoch in 0..plan.ppo_epochs {
        let order = epoch_order(prompts, mix(plan.seed ^ mix(plan.step as u64)), epoch as u64, true);
        for chunk in order.chunks(plan.mini_batch_prompts) {
            let idx: Vec<usize> = chunk.iter().flat_map(|&p| p * b.n..(p + 1) * b.n).collect();
            let mb: Vec<Sample> = idx.iter().map(|&i| b.samples[i]).collect();
            let mb_adv: Vec<f32> = idx.iter().map(|&i| b.advantages[i]).collect();
            let advantages = broadcast_advantages(&mb, &mb_adv);
            let old_logp: Vec<f32> = idx.iter().flat_map(|&i| b.old_logp[i].iter().copied()).collect();
            let ref_logp: Option<Vec<f32>> =
                b.ref_logp.map(|r| idx.iter().flat_map(|&i| r[i].iter().copied()).collect());
            model.ops.zero_params(&mut grads)?;
            let inputs = GrpoInputs { advantages: &advantages, old_logp: &old_logp, ref_logp: ref_logp.as_deref() };
            let out = minibatch_backward(model, &mb, &inputs, plan.grpo, plan.pass, plan.micro_batch_seqs, &mut grads)?;
            let r = apply_update(optim, model, &mut grads, out.loss)?;
            s.lr = r.lr as f64;
            if r.skipped {
                s.skipped += 1;
                continue;
            }
            s.updates += 1;
            s.pg_loss += out.pg_loss;
            s.kl += out.kl_loss;
            s.entropy += out.entropy_mean;
            s.clip_frac += out.clip_frac;
            s.approx_kl += out.approx_kl;
            s.grad_norm += r.grad_norm;
        }
    }
    let u = s.updates.max(1) as f64;
    for x in [&mut s.pg_loss, &mut s.kl, &mut s.entropy, &mut s.clip_frac, &mut s.approx_kl, &mut s.grad_norm] {
        *x /= u;
    }
    Ok(s)
}

/// GRPO loss and gradient of a mini-batch, accumulated into `grads`: in one pass
/// (`micro_seqs` = 0 or ≥ the batch), or in passes of `micro_seqs` sequences whose per-token
/// gradients are scaled so that they sum to the one-pass gradient (the aggregation weights are
/// the whole mini-batch's).
pub fn minibatch_backward<O: Ops>(
    model: &Transformer<O>,
    mb: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    pass: &PassOptions,
    micro_seqs: usize,
    grads: &mut O::Params,
) -> Result<MiniBatchLoss> {
    let total_tokens: usize = mb.iter().map(|s| s.response_len()).sum();
    let total_seqs = mb.len();
    let per_pass = if micro_seqs == 0 { mb.len() } else { micro_seqs }.max(1);
    let mut acc = MiniBatchLoss::default();
    let mut off = 0;
    for micro in mb.chunks(per_pass) {
        let toks: usize = micro.iter().map(|s| s.response_len()).sum();
        let r = off..off + toks;
        off += toks;
        // The micro-batch's own aggregation weights, rescaled to the mini-batch's (exactly 1 in
        // one pass).
        let scale = match cfg.agg {
            LossAgg::TokenMean => toks as f64 / total_tokens.max(1) as f64,
            _ => micro.len() as f64 / total_seqs as f64,
        };
        let token_share = toks as f64 / total_tokens.max(1) as f64;
        let part = GrpoInputs {
            advantages: &inputs.advantages[r.clone()],
            old_logp: &inputs.old_logp[r.clone()],
            ref_logp: inputs.ref_logp.map(|x| &x[r.clone()]),
        };
        let out = grpo_backward_scaled(model, micro, &part, cfg, pass, scale, grads)?;
        acc.loss += scale * out.loss;
        acc.pg_loss += scale * out.pg_loss;
        acc.kl_loss += scale * out.kl_loss;
        acc.entropy_mean += token_share * out.entropy_mean;
        acc.clip_frac += token_share * out.clip_frac;
        acc.approx_kl += token_share * out.approx_kl;
    }
    Ok(acc)
}
