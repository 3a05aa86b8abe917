//! Phase 3 of a GRPO step: the PPO updates. For `ppo_epochs`, the batch's prompts are shuffled
//! (seeded by (seed, step, epoch)) into mini-batches of `mini_batch_prompts` prompts with all
//! their samples; each mini-batch gets `grpo_backward` and one AdamW update.
//!
//! A non-finite loss or gradient norm skips the update: the weights and the AdamW moments stay
//! untouched, the learning-rate schedule still advances, and the skip is counted in the step's
//! metrics (`skipped_updates`). Micro-batching (`MicroBatch`: by sequences, or by a token budget
//! like verl's, first-fit packed) runs a mini-batch in passes whose gradients are scaled to sum
//! to the whole mini-batch's.

use super::adamw::StepReport;
use super::data::epoch_order;
use super::data_parallel::deal_by_tokens;
use super::grpo::{GrpoConfig, LossAgg};
use super::policy::Policy;
use super::step::{broadcast_advantages, grpo_backward_hooked, grpo_backward_scaled, GrpoInputs, LayerDone, PassOptions, Sample};
use crate::dist::{Collective, SingleRank};
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
pub fn apply_update<O: Ops>(policy: &mut Policy<O>, grads: &mut O::Params, loss: f64) -> Result<StepReport> {
    if loss.is_finite() {
        return policy.step(grads);
    }
    Ok(policy.skip_step())
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
    pub micro: MicroBatch,
    pub grpo: &'a GrpoConfig,
    pub pass: &'a PassOptions,
}

/// Runs the step's PPO epochs of mini-batch updates on `model`.
pub fn ppo_updates<O: Ops>(policy: &mut Policy<O>, b: &UpdateBatch, plan: &UpdatePlan) -> Result<UpdateStats> {
    ppo_updates_on(policy, b, plan, &mut SingleRank)
}

/// `ppo_updates` on one rank of a data-parallel group: `b` is the whole batch (every rank holds
/// it, `train::data_parallel`); each mini-batch's samples are dealt to the ranks by tokens, each
/// rank computes its part of the gradient with the whole mini-batch's aggregation weights, and
/// the parts and the loss are summed across ranks before the update. One rank: the whole
/// mini-batch, in order.
pub fn ppo_updates_on<O: Ops>(policy: &mut Policy<O>, b: &UpdateBatch, plan: &UpdatePlan, comm: &mut dyn Collective) -> Result<UpdateStats> {
    let prompts = b.samples.len() / b.n;
    let mut grads = policy.model.ops.zeros_params(policy.model.table())?;
    let mut s = UpdateStats::default();
    for epoch in 0..plan.ppo_epochs {
        let order = epoch_order(prompts, mix(plan.seed ^ mix(plan.step as u64)), epoch as u64, true);
        for chunk in order.chunks(plan.mini_batch_prompts) {
            let all: Vec<usize> = chunk.iter().flat_map(|&p| p * b.n..(p + 1) * b.n).collect();
            // The whole mini-batch's response tokens and sequences (the aggregation weights).
            let totals = (all.iter().map(|&i| b.samples[i].response_len()).sum::<usize>(), all.len());
            let costs: Vec<usize> = all.iter().map(|&i| b.samples[i].tokens.len()).collect();
            let idx: Vec<usize> = deal_by_tokens(&costs, comm.world_size()).swap_remove(comm.rank()).into_iter().map(|k| all[k]).collect();
            let mb: Vec<Sample> = idx.iter().map(|&i| b.samples[i]).collect();
            let mb_adv: Vec<f32> = idx.iter().map(|&i| b.advantages[i]).collect();
            let advantages = broadcast_advantages(&mb, &mb_adv);
            let old_logp: Vec<f32> = idx.iter().flat_map(|&i| b.old_logp[i].iter().copied()).collect();
            let ref_logp: Option<Vec<f32>> =
                b.ref_logp.map(|r| idx.iter().flat_map(|&i| r[i].iter().copied()).collect());
            policy.model.ops.zero_params(&mut grads)?;
            let inputs = GrpoInputs { advantages: &advantages, old_logp: &old_logp, ref_logp: ref_logp.as_deref() };
            let mut out = if comm.world_size() == 1 {
                minibatch_backward_of(&policy.model, &mb, &inputs, plan.grpo, plan.pass, plan.micro, totals, &mut grads, &mut |_, _| Ok(()))?
            } else {
                // Each layer's gradient bucket is all-reduced as soon as the last pass's backward
                // has finished it (last layer first), beside the backward of the earlier layers;
                // then the embedding, final norm and lm_head. Every rank issues the same buckets
                // in the same order, a rank with no samples in this mini-batch too.
                let (ops, table) = (policy.model.ops.clone(), policy.model.table().clone());
                let out = if mb.is_empty() {
                    for l in (0..table.num_layers()).rev() {
                        ops.all_reduce_params_range(comm, &mut grads, table.layer_range(l))?;
                    }
                    MiniBatchLoss::default()
                } else {
                    let mut bucket = |l: usize, g: &mut O::Params| ops.all_reduce_params_range(comm, g, table.layer_range(l));
                    minibatch_backward_of(&policy.model, &mb, &inputs, plan.grpo, plan.pass, plan.micro, totals, &mut grads, &mut bucket)?
                };
                for r in table.global_ranges() {
                    ops.all_reduce_params_range(comm, &mut grads, r)?;
                }
                ops.finish_all_reduce(comm)?;
                out
            };
            if comm.world_size() > 1 {
                let mut parts = [out.loss, out.pg_loss, out.kl_loss, out.entropy_mean, out.clip_frac, out.approx_kl];
                comm.all_reduce_sum_f64(&mut parts)?;
                let [loss, pg_loss, kl_loss, entropy_mean, clip_frac, approx_kl] = parts;
                out = MiniBatchLoss { loss, pg_loss, kl_loss, entropy_mean, clip_frac, approx_kl };
            }
            let r = apply_update(policy, &mut grads, out.loss)?;
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

/// How a mini-batch is cut into forward/backward passes (gradient accumulation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MicroBatch {
    /// The whole mini-batch in one pass.
    Whole,
    /// At most this many sequences a pass, in order.
    Seqs(usize),
    /// At most this many tokens (prompt + response) a pass, like verl's per-GPU token budget:
    /// sequences packed without padding, first-fit by decreasing length, so one long response
    /// and many short ones each fill a pass; a sequence longer than the budget runs alone.
    Tokens(usize),
}

/// The passes of a mini-batch, each a list of indices into `mb` (every index exactly once).
pub fn micro_batches(mb: &[Sample], cut: MicroBatch) -> Vec<Vec<usize>> {
    match cut {
        MicroBatch::Whole => vec![(0..mb.len()).collect()],
        MicroBatch::Seqs(k) => (0..mb.len()).collect::<Vec<_>>().chunks(k.max(1)).map(|c| c.to_vec()).collect(),
        MicroBatch::Tokens(budget) => {
            let mut order: Vec<usize> = (0..mb.len()).collect();
            // Longest first (ties in batch order), each into the first pass with room.
            order.sort_by(|&a, &b| mb[b].tokens.len().cmp(&mb[a].tokens.len()).then(a.cmp(&b)));
            let mut passes: Vec<(usize, Vec<usize>)> = Vec::new();
            for i in order {
                let len = mb[i].tokens.len();
                match passes.iter_mut().find(|(used, _)| used + len <= budget) {
                    Some((used, p)) => {
                        *used += len;
                        p.push(i);
                    }
                    None => passes.push((len, vec![i])),
                }
            }
            passes.into_iter().map(|(_, mut p)| {
                p.sort_unstable();
                p
            }).collect()
        }
    }
}

/// GRPO loss and gradient of a mini-batch, accumulated into `grads`: in the passes `cut` gives,
/// whose per-token gradients are scaled so that they sum to the one-pass gradient (the
/// aggregation weights are the whole mini-batch's; exactly 1 in one pass).
pub fn minibatch_backward<O: Ops>(
    model: &Transformer<O>,
    mb: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    pass: &PassOptions,
    cut: MicroBatch,
    grads: &mut O::Params,
) -> Result<MiniBatchLoss> {
    let totals = (mb.iter().map(|s| s.response_len()).sum(), mb.len());
    minibatch_backward_of(model, mb, inputs, cfg, pass, cut, totals, grads, &mut |_, _| Ok(()))
}

/// `minibatch_backward` of the part `mb` of a mini-batch whose response tokens and sequences
/// number `(total_tokens, total_seqs)` over all ranks: the part's gradient and loss with the
/// whole mini-batch's aggregation weights (the parts sum to the whole's).
#[allow(clippy::too_many_arguments)]
pub fn minibatch_backward_of<O: Ops>(
    model: &Transformer<O>,
    mb: &[Sample],
    inputs: &GrpoInputs,
    cfg: &GrpoConfig,
    pass: &PassOptions,
    cut: MicroBatch,
    (total_tokens, total_seqs): (usize, usize),
    grads: &mut O::Params,
    last_pass_layer_done: LayerDone<O::Params>,
) -> Result<MiniBatchLoss> {
    // Where each sample's response tokens start in the per-token inputs.
    let starts: Vec<usize> = mb.iter().scan(0, |off, s| {
        let start = *off;
        *off += s.response_len();
        Some(start)
    }).collect();
    let gather = |idx: &[usize], x: &[f32]| -> Vec<f32> {
        idx.iter().flat_map(|&i| x[starts[i]..starts[i] + mb[i].response_len()].iter().copied()).collect()
    };
    let mut acc = MiniBatchLoss::default();
    let passes = micro_batches(mb, cut);
    let last = passes.len().saturating_sub(1);
    for (pass_no, idx) in passes.into_iter().enumerate() {
        let micro: Vec<Sample> = idx.iter().map(|&i| mb[i]).collect();
        let toks: usize = micro.iter().map(|s| s.response_len()).sum();
        // The micro-batch's own aggregation weights, rescaled to the mini-batch's (exactly 1 in
        // one pass).
        let scale = match cfg.agg {
            LossAgg::TokenMean => toks as f64 / total_tokens.max(1) as f64,
            _ => micro.len() as f64 / total_seqs as f64,
        };
        let token_share = toks as f64 / total_tokens.max(1) as f64;
        let (advantages, old_logp) = (gather(&idx, inputs.advantages), gather(&idx, inputs.old_logp));
        let ref_logp = inputs.ref_logp.map(|x| gather(&idx, x));
        let part = GrpoInputs { advantages: &advantages, old_logp: &old_logp, ref_logp: ref_logp.as_deref() };
        // A layer's gradient is final only in the last pass (the earlier ones accumulate).
        let out = if pass_no == last {
            grpo_backward_hooked(model, &micro, &part, cfg, pass, scale, grads, &mut *last_pass_layer_done)?
        } else {
            grpo_backward_scaled(model, &micro, &part, cfg, pass, scale, grads)?
        };
        acc.loss += scale * out.loss;
        acc.pg_loss += scale * out.pg_loss;
        acc.kl_loss += scale * out.kl_loss;
        acc.entropy_mean += token_share * out.entropy_mean;
        acc.clip_frac += token_share * out.clip_frac;
        acc.approx_kl += token_share * out.approx_kl;
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(lens: &[usize], store: &mut Vec<Vec<u32>>) -> Vec<usize> {
        store.clear();
        store.extend(lens.iter().map(|&l| vec![1u32; l]));
        lens.to_vec()
    }

    #[test]
    fn token_budget_packs_first_fit_by_decreasing_length() {
        let mut store = Vec::new();
        let lens = samples(&[30, 5, 100, 8, 60, 1, 40], &mut store);
        let mb: Vec<Sample> = store.iter().map(|t| Sample { tokens: t, prompt_len: 1 }).collect();
        let passes = micro_batches(&mb, MicroBatch::Tokens(64));
        let mut seen: Vec<usize> = passes.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>(), "every sequence exactly once");
        for p in &passes {
            let total: usize = p.iter().map(|&i| lens[i]).sum();
            assert!(total <= 64 || p.len() == 1, "{p:?} holds {total} tokens");
        }
        assert!(passes.iter().any(|p| p == &vec![2]), "the 100-token sequence runs alone: {passes:?}");
        // First-fit decreasing over 100, 60, 40, 30, 8, 5, 1: {100} (alone, over the budget),
        // {60, 1}, {40, 8, 5}, {30}.
        assert_eq!(passes, vec![vec![2], vec![4, 5], vec![1, 3, 6], vec![0]]);
        assert_eq!(micro_batches(&mb, MicroBatch::Whole), vec![(0..7).collect::<Vec<_>>()]);
        assert_eq!(micro_batches(&mb, MicroBatch::Seqs(3)).len(), 3);
    }
}
