//! The GRPO step across data-parallel ranks (`crate::dist`: who the ranks are, the collectives).
//!
//! 1. Rollout: the batch's prompts are cut into runs of whole groups, about four per rank, and
//!    each rank claims the next run from rank 0 as soon as it has finished its last (so a rank
//!    whose responses run long takes fewer, and none idles while another finishes a long
//!    tail); every sample is seeded by its place in the whole batch, so the samples do not
//!    depend on the number of ranks or on who rolled them out.
//! 2. The graded samples are gathered: every rank then holds the whole batch (tokens, rewards,
//!    the sampler's log-probs), computes the same advantages and metrics, and takes the same
//!    stage decisions.
//! 3. Log-probs and updates are shared by tokens, not by prompts, as verl's `balance_batch`: the
//!    samples are dealt to the ranks so that each gets about the same number of tokens (longest
//!    first, each to the least-loaded rank), so one rank's long responses do not leave the
//!    others idle. The old/ref log-probs each rank computes are gathered back; each mini-batch's
//!    samples are dealt the same way, each rank computes its part's gradient with the whole
//!    mini-batch's aggregation weights, and the parts are summed before the same clip and AdamW
//!    on every rank, which therefore keep identical weights. The sum runs in buckets, one per
//!    layer, each started as soon as the backward has finished that layer (`update.rs`), so on
//!    a GPU the all-reduce of the later layers runs beside the backward of the earlier ones. GRPO's per-token loss needs nothing of a sample's group once the
//!    advantages exist, so any split of a mini-batch sums to the same gradient.
//!
//! With one rank every step is the single-process step, bit for bit.

use super::metrics::{LogProbGap, PhaseTime};
use super::rollout::Rollouts;
use crate::dist::{all_gather_f64, Collective};
use anyhow::Result;

/// The rollout's work items: runs of consecutive prompts (their groups whole), about four per
/// rank so that a rank slowed by long responses takes fewer of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutRuns {
    prompts: usize,
    per_run: usize,
}

impl RolloutRuns {
    pub fn new(prompts: usize, world: usize) -> RolloutRuns {
        RolloutRuns { prompts, per_run: (prompts / (4 * world.max(1))).max(1) }
    }

    /// How many runs (claims) there are.
    pub fn count(&self) -> usize {
        self.prompts.div_ceil(self.per_run)
    }

    /// The prompts of run `i`.
    pub fn get(&self, i: usize) -> std::ops::Range<usize> {
        i * self.per_run..((i + 1) * self.per_run).min(self.prompts)
    }
}

/// The whole batch's rollouts on every rank, in batch order, from each rank's runs (`parts`:
/// the batch index of each run's first prompt, and its rollouts); the timings are this rank's.
/// One rank with one run: that run itself.
pub fn gather_rollouts(comm: &mut dyn Collective, mut parts: Vec<(usize, Rollouts)>) -> Result<Rollouts> {
    if comm.world_size() == 1 && parts.len() == 1 {
        return Ok(parts.pop().expect("one part").1);
    }
    let (mut rollout_s, mut rollout_tok, mut verify_s) = (0.0, 0, 0.0);
    // Per run: its first prompt and sample count; per sample: total length, prompt length,
    // reward, correct, cut, tokens, log-probs.
    let mut mine = Vec::new();
    for (first, ro) in &parts {
        rollout_s += ro.rollout_time.secs;
        rollout_tok += ro.rollout_time.tokens;
        verify_s += ro.verify_time.secs;
        mine.extend([*first as f64, ro.seqs.len() as f64]);
        for i in 0..ro.seqs.len() {
            mine.extend([ro.seqs[i].len() as f64, ro.prompt_lens[i] as f64, ro.rewards[i] as f64]);
            mine.extend([ro.correct[i] as u8 as f64, ro.cut[i] as u8 as f64]);
            mine.extend(ro.seqs[i].iter().map(|&t| t as f64));
            mine.extend(ro.logprobs[i].iter().map(|&l| l as f64));
        }
    }
    let mut runs: Vec<(usize, Rollouts)> = Vec::new();
    for part in all_gather_f64(comm, &mine)? {
        let mut at = 0;
        while at < part.len() {
            let (first, count) = (part[at] as usize, part[at + 1] as usize);
            at += 2;
            let mut ro = Rollouts { seqs: Vec::new(), prompt_lens: Vec::new(), logprobs: Vec::new(), rewards: Vec::new(), correct: Vec::new(), cut: Vec::new(), rollout_time: Default::default(), verify_time: Default::default() };
            for _ in 0..count {
                let (len, plen) = (part[at] as usize, part[at + 1] as usize);
                ro.rewards.push(part[at + 2] as f32);
                ro.correct.push(part[at + 3] != 0.0);
                ro.cut.push(part[at + 4] != 0.0);
                at += 5;
                ro.seqs.push(part[at..at + len].iter().map(|&t| t as u32).collect());
                at += len;
                ro.logprobs.push(part[at..at + len - plen].iter().map(|&l| l as f32).collect());
                at += len - plen;
                ro.prompt_lens.push(plen);
            }
            runs.push((first, ro));
        }
    }
    runs.sort_by_key(|(first, _)| *first);
    let mut all = Rollouts { seqs: Vec::new(), prompt_lens: Vec::new(), logprobs: Vec::new(), rewards: Vec::new(), correct: Vec::new(), cut: Vec::new(), rollout_time: PhaseTime::new(rollout_s, rollout_tok), verify_time: PhaseTime::new(verify_s, 0) };
    for (_, ro) in runs {
        all.seqs.extend(ro.seqs);
        all.prompt_lens.extend(ro.prompt_lens);
        all.logprobs.extend(ro.logprobs);
        all.rewards.extend(ro.rewards);
        all.correct.extend(ro.correct);
        all.cut.extend(ro.cut);
    }
    Ok(all)
}

/// `items` (their costs in tokens) dealt to `world` ranks so the ranks' totals are close: the
/// costliest first, each to the rank with the least so far (ties: lower index, lower rank), each
/// rank's items then in their original order. Deterministic, so every rank computes the same
/// deal; one rank gets everything in order.
pub fn deal_by_tokens(costs: &[usize], world: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]).then(a.cmp(&b)));
    let mut bins: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); world];
    for i in order {
        let r = (0..world).min_by_key(|&r| (bins[r].0, r)).unwrap_or(0);
        bins[r].0 += costs[i];
        bins[r].1.push(i);
    }
    bins.into_iter()
        .map(|(_, mut b)| {
            b.sort_unstable();
            b
        })
        .collect()
}

/// Per-sample values (`mine[k]` for sample `deal[rank][k]`) from every rank, in sample order.
pub fn gather_per_sample(comm: &mut dyn Collective, deal: &[Vec<usize>], mine: Vec<Vec<f32>>) -> Result<Vec<Vec<f32>>> {
    if comm.world_size() == 1 {
        return Ok(mine);
    }
    let total: usize = deal.iter().map(|d| d.len()).sum();
    let mut flat = Vec::new();
    for v in &mine {
        flat.push(v.len() as f64);
        flat.extend(v.iter().map(|&x| x as f64));
    }
    let mut out = vec![Vec::new(); total];
    for (r, part) in all_gather_f64(comm, &flat)?.into_iter().enumerate() {
        let mut at = 0;
        for &i in &deal[r] {
            let n = part[at] as usize;
            out[i] = part[at + 1..at + 1 + n].iter().map(|&x| x as f32).collect();
            at += 1 + n;
        }
    }
    Ok(out)
}

/// The batch's log-prob gap from each rank's token sums.
pub fn gather_gap(comm: &mut dyn Collective, a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<LogProbGap> {
    let (sum, n, max) = LogProbGap::parts(a, b);
    let (mut total, mut count, mut worst) = (0.0, 0.0, 0.0f64);
    for p in all_gather_f64(comm, &[sum, n as f64, max])? {
        total += p[0];
        count += p[1];
        worst = if p[2].is_nan() || worst.is_nan() { f64::NAN } else { worst.max(p[2]) };
    }
    Ok(LogProbGap { mean: if count == 0.0 { 0.0 } else { total / count }, max: worst })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_runs_cover_the_batch_once_in_order() {
        for (prompts, world) in [(128, 8), (7, 3), (2, 4), (1, 1), (64, 2)] {
            let runs = RolloutRuns::new(prompts, world);
            let covered: Vec<usize> = (0..runs.count()).flat_map(|i| runs.get(i)).collect();
            assert_eq!(covered, (0..prompts).collect::<Vec<_>>(), "{prompts} prompts, {world} ranks");
            assert!(runs.count() >= (4 * world).min(prompts), "{prompts} prompts, {world} ranks: {} runs", runs.count());
        }
    }

    #[test]
    fn dealing_by_tokens_balances_and_keeps_order() {
        let costs = [100, 5, 30, 60, 8, 40, 1];
        assert_eq!(deal_by_tokens(&costs, 1), vec![(0..7).collect::<Vec<_>>()]);
        let bins = deal_by_tokens(&costs, 2);
        // Longest first to the least loaded: 100→0, 60→1, 40→1 (100 each), 30→0 (tie: rank 0),
        // then 8, 5, 1 → 1: 130 against 114.
        assert_eq!(bins, vec![vec![0, 2], vec![1, 3, 4, 5, 6]]);
        let mut seen: Vec<usize> = bins.concat();
        seen.sort();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        let load = |b: &Vec<usize>| b.iter().map(|&i| costs[i]).sum::<usize>();
        let (a, b) = (load(&bins[0]), load(&bins[1]));
        assert!(a.abs_diff(b) <= 100, "{bins:?}: {a} vs {b} (greedy is within the largest item)");
        assert!(bins.iter().all(|b| b.windows(2).all(|w| w[0] < w[1])));
        // More ranks than items: some get none.
        assert_eq!(deal_by_tokens(&[3, 2], 3).iter().filter(|b| b.is_empty()).count(), 1);
    }
}
