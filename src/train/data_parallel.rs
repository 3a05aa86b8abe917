//! The GRPO step across data-parallel ranks (`crate::dist`: who the ranks are, the collectives).
//!
//! 1. Rollout: each rank samples a contiguous share of the step's prompts, whole groups, seeded
//!    by their place in the whole batch (so the samples do not depend on the number of ranks).
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

use super::metrics::LogProbGap;
use super::rollout::Rollouts;
use crate::dist::{all_gather_f64, Collective};
use anyhow::Result;

/// The prompts of a step's batch that one rank rolls out: `first..first + len` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    pub first: usize,
    pub len: usize,
    pub total: usize,
}

impl Share {
    /// All of a batch of `total` prompts (one rank).
    pub fn whole(total: usize) -> Share {
        Share { first: 0, len: total, total }
    }

    /// Rank `rank`'s block of `total` prompts over `world` ranks: sizes differ by at most one,
    /// in rank order (so the ranks' samples concatenated are the batch's, in order).
    pub fn of(total: usize, rank: usize, world: usize) -> Share {
        let first = rank * total / world;
        Share { first, len: (rank + 1) * total / world - first, total }
    }

    /// Prompt `p` of the batch as an index into this rank's prompts, if it is one of them.
    pub fn local(&self, p: usize) -> Option<usize> {
        (self.first..self.first + self.len).contains(&p).then(|| p - self.first)
    }
}

/// The whole batch's rollouts, every rank's share concatenated in rank order (= batch order);
/// the timings stay this rank's. One rank: `ro` itself.
pub fn gather_rollouts(comm: &mut dyn Collective, ro: Rollouts) -> Result<Rollouts> {
    if comm.world_size() == 1 {
        return Ok(ro);
    }
    // Per sample: total length, prompt length, reward, correct, cut, tokens, log-probs.
    let mut mine = Vec::new();
    for i in 0..ro.seqs.len() {
        mine.extend([ro.seqs[i].len() as f64, ro.prompt_lens[i] as f64, ro.rewards[i] as f64]);
        mine.extend([ro.correct[i] as u8 as f64, ro.cut[i] as u8 as f64]);
        mine.extend(ro.seqs[i].iter().map(|&t| t as f64));
        mine.extend(ro.logprobs[i].iter().map(|&l| l as f64));
    }
    let mut all = Rollouts { seqs: Vec::new(), prompt_lens: Vec::new(), logprobs: Vec::new(), rewards: Vec::new(), correct: Vec::new(), cut: Vec::new(), rollout_time: ro.rollout_time, verify_time: ro.verify_time };
    for part in all_gather_f64(comm, &mine)? {
        let mut at = 0;
        while at < part.len() {
            let (len, plen) = (part[at] as usize, part[at + 1] as usize);
            all.rewards.push(part[at + 2] as f32);
            all.correct.push(part[at + 3] != 0.0);
            all.cut.push(part[at + 4] != 0.0);
            at += 5;
            all.seqs.push(part[at..at + len].iter().map(|&t| t as u32).collect());
            at += len;
            all.logprobs.push(part[at..at + len - plen].iter().map(|&l| l as f32).collect());
            at += len - plen;
            all.prompt_lens.push(plen);
        }
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
    fn shares_cover_the_batch_once_in_order() {
        for (total, world) in [(8, 2), (7, 3), (2, 4), (1, 1)] {
            let shares: Vec<Share> = (0..world).map(|r| Share::of(total, r, world)).collect();
            let mut next = 0;
            for s in &shares {
                assert_eq!(s.first, next, "{shares:?}");
                assert!(s.len + 1 >= total / world && s.len <= total.div_ceil(world), "{shares:?}");
                next += s.len;
            }
            assert_eq!(next, total);
            let owners: Vec<usize> = (0..total).map(|p| shares.iter().filter(|s| s.local(p).is_some()).count()).collect();
            assert!(owners.iter().all(|&c| c == 1));
        }
        assert_eq!(Share::whole(5), Share::of(5, 0, 1));
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
