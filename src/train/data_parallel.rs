//! The GRPO step across data-parallel ranks (`crate::dist`: who the ranks are, the collectives).
//!
//! Each rank rolls out a contiguous share of the step's prompts, whole groups, so advantages
//! stay local; it computes its share's gradient with the aggregation weights of the WHOLE batch
//! (the mini-batch's global token and sequence counts), so the ranks' gradients sum to one
//! rank's gradient on the whole batch. That sum (an all-reduce) goes through the same clip and
//! AdamW on every rank, which therefore keep identical weights. The per-sample facts the metrics
//! and the stage switches read (rewards, lengths, correctness, cut-offs) are gathered, so every
//! rank takes the same stage decisions and rank 0 logs the batch's metrics.

use super::metrics::LogProbGap;
use crate::dist::{all_gather_f64, Collective};
use crate::ops::Ops;
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

/// `g` ← Σ over ranks of `g`: one collective over the flat gradient buffer (in place on the
/// device with NCCL).
pub fn all_reduce_grads<O: Ops>(comm: &mut dyn Collective, ops: &O, g: &mut O::Params) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    ops.all_reduce_params(comm, g)
}

/// A batch's per-sample facts, every rank's concatenated in rank order.
pub struct Gathered {
    pub rewards: Vec<f32>,
    pub response_lens: Vec<usize>,
    pub correct: Vec<bool>,
    pub cut: Vec<bool>,
}

impl Gathered {
    pub fn new(comm: &mut dyn Collective, rewards: &[f32], response_lens: &[usize], correct: &[bool], cut: &[bool]) -> Result<Gathered> {
        let flag = |b: &bool| if *b { 1.0 } else { 0.0 };
        let mut mine: Vec<f64> = rewards.iter().map(|&r| r as f64).collect();
        mine.extend(response_lens.iter().map(|&l| l as f64));
        mine.extend(correct.iter().map(flag));
        mine.extend(cut.iter().map(flag));
        let mut g = Gathered { rewards: Vec::new(), response_lens: Vec::new(), correct: Vec::new(), cut: Vec::new() };
        for part in all_gather_f64(comm, &mine)? {
            let k = part.len() / 4;
            g.rewards.extend(part[..k].iter().map(|&r| r as f32));
            g.response_lens.extend(part[k..2 * k].iter().map(|&l| l as usize));
            g.correct.extend(part[2 * k..3 * k].iter().map(|&c| c != 0.0));
            g.cut.extend(part[3 * k..].iter().map(|&c| c != 0.0));
        }
        Ok(g)
    }
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

/// The sum over ranks of one count.
pub fn sum_count(comm: &mut dyn Collective, x: usize) -> Result<usize> {
    let mut v = [x as f64];
    comm.all_reduce_sum_f64(&mut v)?;
    Ok(v[0] as usize)
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
}
