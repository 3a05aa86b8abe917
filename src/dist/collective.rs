//! The collectives a data-parallel GRPO step needs — sum-all-reduce (the flat gradient buffer, the
//! step's metrics and token counts) and broadcast (rank 0's initial weights) — and `ThreadGroup`,
//! an in-process implementation with NCCL's semantics for tests and interpret mode: every rank
//! calls the same collectives in the same order, each call returns only once all ranks made it,
//! and a rank that leaves or waits past the timeout makes every other rank's call fail with an
//! error naming it (NCCL's communicator abort), never a hang.
//!
//! Sums are taken in rank order in f64, so the result does not depend on which thread arrives
//! first: 2 ranks give the same bits on every run. (NCCL's ring sums in the buffer's type in ring
//! order; its result is deterministic for a fixed topology too, but not the same bits as this.)

use crate::device::{Buffer, Device};
use anyhow::{bail, Result};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// buf ← Σ over ranks of buf.
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()>;
    /// The same for f64 scalars (metrics, token counts: exact below 2^53).
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()>;
    /// buf ← root's buf on every rank.
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()>;
    /// `buf` (f32 elements on `dev`) ← Σ over ranks. By default through the host (the
    /// in-process group, interpret mode); NCCL reduces GPU memory in place.
    fn all_reduce_sum_buffer(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let mut v: Vec<f32> = dev.download(buf)?;
        self.all_reduce_sum(&mut v)?;
        dev.write(buf, &v)
    }
    /// Starts `buf ← Σ over ranks` for one bucket of the gradient (one layer's, as soon as the
    /// backward has produced it); the result is there after `finish_buckets`. NCCL runs the
    /// buckets on a stream of their own, beside the backward of the earlier layers; by default
    /// (the in-process group) each is reduced at once.
    fn all_reduce_bucket(&mut self, dev: &Device, buf: &Buffer) -> Result<()> {
        self.all_reduce_sum_buffer(dev, buf)
    }
    /// Waits for every bucket started, and makes `dev`'s later work wait for them.
    fn finish_buckets(&mut self, _dev: &Device) -> Result<()> {
        Ok(())
    }
    /// The next of `total` work items of `round` for this rank — each item goes to exactly one
    /// rank, whichever asks first — or None when all are dealt. Not a collective: ranks call it
    /// independently, as fast as they get through their items (the rollout's load balancing).
    fn claim(&mut self, round: u64, total: usize) -> Result<Option<usize>> {
        let _ = (round, total);
        bail!("work claims need a group of ranks")
    }
}

/// Every rank's `mine`, in rank order, on every rank (lengths may differ): two sum-all-reduces,
/// the lengths then the values placed at each rank's offset (x + 0 = x, so the sum is exact).
pub fn all_gather_f64(c: &mut dyn Collective, mine: &[f64]) -> Result<Vec<Vec<f64>>> {
    let (w, r) = (c.world_size(), c.rank());
    let mut lens = vec![0.0; w];
    lens[r] = mine.len() as f64;
    c.all_reduce_sum_f64(&mut lens)?;
    let lens: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
    let off: usize = lens[..r].iter().sum();
    let mut all = vec![0.0; lens.iter().sum()];
    all[off..off + mine.len()].copy_from_slice(mine);
    c.all_reduce_sum_f64(&mut all)?;
    let mut out = Vec::with_capacity(w);
    let mut at = 0;
    for l in lens {
        out.push(all[at..at + l].to_vec());
        at += l;
    }
    Ok(out)
}

/// One process: every collective is the identity.
pub struct SingleRank;

impl Collective for SingleRank {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32], _: usize) -> Result<()> {
        Ok(())
    }
}

/// What one call deposits: its kind (so ranks calling different collectives is an error, where
/// NCCL would hang or corrupt) and its data.
#[derive(Clone, PartialEq)]
enum Kind {
    Sum,
    Broadcast(usize),
}

struct Shared {
    world: usize,
    timeout: Duration,
    state: Mutex<State>,
    cv: Condvar,
    claims: Mutex<Claims>,
}

struct State {
    /// The call every rank is on (each rank's own count must match it to deposit).
    call: u64,
    slots: Vec<Option<(Kind, Vec<f64>)>>,
    /// The finished call's result, read by each rank once; `taken` counts them.
    result: Option<Arc<Vec<f64>>>,
    taken: usize,
    /// Set once: why the group stopped (a rank left, a timeout, a mismatch).
    aborted: Option<String>,
    /// Ranks whose handle is gone, with the number of collectives they made.
    left: Vec<Option<u64>>,
}

/// Work items of one round, dealt in order (`claim`).
#[derive(Default)]
struct Claims {
    round: u64,
    next: usize,
}

impl State {
    /// Fails if the group stopped, or stops it if a rank left before making call `call`.
    fn check(&mut self, me: usize, call: u64) -> Result<()> {
        if self.aborted.is_none() {
            if let Some((r, n)) = self.left.iter().enumerate().find_map(|(r, l)| l.filter(|&n| n <= call).map(|n| (r, n))) {
                self.aborted = Some(format!("rank {r} left the group after {n} collectives"));
            }
        }
        match &self.aborted {
            Some(why) => bail!("collective #{call} on rank {me}: the group stopped: {why}"),
            None => Ok(()),
        }
    }
}

/// One rank's handle into a group of threads.
pub struct ThreadGroup {
    rank: usize,
    calls: u64,
    shared: Arc<Shared>,
}

impl ThreadGroup {
    /// `world` handles, rank 0 first; give each to its thread.
    pub fn new(world: usize, timeout: Duration) -> Vec<ThreadGroup> {
        let shared = Arc::new(Shared {
            world,
            timeout,
            state: Mutex::new(State { call: 0, slots: vec![None; world], result: None, taken: 0, aborted: None, left: vec![None; world] }),
            cv: Condvar::new(),
            claims: Mutex::new(Claims::default()),
        });
        (0..world).map(|rank| ThreadGroup { rank, calls: 0, shared: shared.clone() }).collect()
    }

    /// Stops the group: every rank's current and later calls fail with `why`.
    pub fn abort(&self, why: String) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.aborted.get_or_insert(why);
        self.shared.cv.notify_all();
    }

    fn collective(&mut self, kind: Kind, data: Vec<f64>) -> Result<Arc<Vec<f64>>> {
        let (sh, me, call) = (self.shared.clone(), self.rank, self.calls);
        let deadline = Instant::now() + sh.timeout;
        let mut st = sh.state.lock().unwrap_or_else(|p| p.into_inner());
        let what = |k: &Kind| match k {
            Kind::Sum => "all-reduce".to_string(),
            Kind::Broadcast(r) => format!("broadcast from rank {r}"),
        };
        // Wait for the previous call's result to be taken by every rank, then deposit.
        loop {
            st.check(me, call).inspect_err(|_| sh.cv.notify_all())?;
            if st.call == call && st.result.is_none() {
                break;
            }
            st = self.wait(st, deadline, call)?;
        }
        // Check against what the others deposited for this call.
        if let Some((r, (k, d))) = st.slots.iter().enumerate().find_map(|(r, s)| s.as_ref().map(|s| (r, s))) {
            if *k != kind || d.len() != data.len() {
                let why = format!(
                    "collective #{call}: rank {me} called {} of {} values, rank {r} {} of {}",
                    what(&kind),
                    data.len(),
                    what(k),
                    d.len()
                );
                st.aborted = Some(why.clone());
                sh.cv.notify_all();
                bail!(why);
            }
        }
        st.slots[me] = Some((kind.clone(), data));
        if st.slots.iter().all(|s| s.is_some()) {
            // The last to arrive computes the result, in rank order.
            let slots: Vec<Vec<f64>> = st.slots.iter_mut().map(|s| s.take().unwrap().1).collect();
            let out = match kind {
                Kind::Broadcast(root) => slots.into_iter().nth(root).unwrap(),
                Kind::Sum => {
                    let mut acc = vec![0.0f64; slots[0].len()];
                    for s in &slots {
                        for (a, v) in acc.iter_mut().zip(s) {
                            *a += v;
                        }
                    }
                    acc
                }
            };
            st.result = Some(Arc::new(out));
            sh.cv.notify_all();
        }
        while st.result.is_none() || st.call != call {
            st.check(me, call).inspect_err(|_| sh.cv.notify_all())?;
            st = self.wait(st, deadline, call)?;
        }
        let result = st.result.clone().unwrap();
        st.taken += 1;
        if st.taken == sh.world {
            st.result = None;
            st.taken = 0;
            st.call += 1;
            sh.cv.notify_all();
        }
        self.calls += 1;
        Ok(result)
    }

    /// Waits for a change; past the deadline, aborts the group naming the ranks that are missing.
    fn wait<'a>(&self, st: std::sync::MutexGuard<'a, State>, deadline: Instant, call: u64) -> Result<std::sync::MutexGuard<'a, State>> {
        let now = Instant::now();
        if now >= deadline {
            let mut st = st;
            let missing: Vec<String> = st.slots.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(r, _)| r.to_string()).collect();
            let why = format!(
                "rank {} waited {:.1} s in collective #{call} for rank(s) {}",
                self.rank,
                self.shared.timeout.as_secs_f64(),
                missing.join(", ")
            );
            st.aborted.get_or_insert(why.clone());
            self.shared.cv.notify_all();
            bail!(why);
        }
        let (mut st, _) = self.shared.cv.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner());
        st.check(self.rank, call)?;
        Ok(st)
    }
}

/// A rank that goes away (returns early, panics) stops the others at their next collective it
/// does not join, as NCCL's abort would; ranks that all made the same calls leave quietly.
impl Drop for ThreadGroup {
    fn drop(&mut self) {
        let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        st.left[self.rank] = Some(self.calls);
        self.shared.cv.notify_all();
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.shared.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<()> {
        let r = self.collective(Kind::Sum, buf.iter().map(|&v| v as f64).collect())?;
        buf.iter_mut().zip(r.iter()).for_each(|(b, v)| *b = *v as f32);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let r = self.collective(Kind::Sum, buf.to_vec())?;
        buf.copy_from_slice(&r);
        Ok(())
    }
    fn claim(&mut self, round: u64, total: usize) -> Result<Option<usize>> {
        let mut c = self.shared.claims.lock().unwrap_or_else(|p| p.into_inner());
        // A later round starts afresh; an earlier one is over (it was dealt out before any
        // rank could move on).
        if round > c.round {
            *c = Claims { round, next: 0 };
        } else if round < c.round {
            return Ok(None);
        }
        Ok((c.next < total).then(|| {
            c.next += 1;
            c.next - 1
        }))
    }
    fn broadcast(&mut self, buf: &mut [f32], root: usize) -> Result<()> {
        if root >= self.shared.world {
            bail!("broadcast from rank {root} in a group of {}", self.shared.world);
        }
        let r = self.collective(Kind::Broadcast(root), buf.iter().map(|&v| v as f64).collect())?;
        buf.iter_mut().zip(r.iter()).for_each(|(b, v)| *b = *v as f32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static>(world: usize, timeout_ms: u64, f: impl Fn(ThreadGroup) -> T + Send + Sync + 'static) -> Vec<std::thread::Result<T>> {
        let f = Arc::new(f);
        let handles: Vec<_> = ThreadGroup::new(world, Duration::from_millis(timeout_ms))
            .into_iter()
            .map(|g| {
                let f = f.clone();
                std::thread::spawn(move || f(g))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    }

    #[test]
    fn sums_and_broadcasts_like_one_rank() {
        let out = run(3, 10_000, |mut g| {
            let r = g.rank() as f32;
            let mut v = vec![r, 10.0 * r, 0.5];
            g.all_reduce_sum(&mut v).unwrap();
            let mut w = vec![r; 4];
            g.broadcast(&mut w, 2).unwrap();
            let mut n = vec![1e15 + r as f64];
            g.all_reduce_sum_f64(&mut n).unwrap();
            // Many calls in a row reuse the slots correctly.
            let mut acc = 0.0;
            for i in 0..200 {
                let mut x = [i as f32 + r];
                g.all_reduce_sum(&mut x).unwrap();
                acc += x[0];
            }
            (v, w, n, acc)
        });
        let expect_acc: f32 = (0..200).map(|i| (3 * i + 3) as f32).sum();
        for o in out {
            let (v, w, n, acc) = o.unwrap();
            assert_eq!(v, vec![3.0, 30.0, 1.5]);
            assert_eq!(w, vec![2.0; 4]);
            assert_eq!(n, vec![3e15 + 3.0]);
            assert_eq!(acc, expect_acc);
        }
    }

    #[test]
    fn a_rank_that_leaves_or_stalls_stops_the_others_naming_it() {
        // Rank 1 returns after one collective; the others' second call fails naming it.
        let out = run(3, 20_000, |mut g| {
            let mut x = [1.0];
            g.all_reduce_sum(&mut x).unwrap();
            if g.rank() == 1 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
            g.all_reduce_sum(&mut x).map_err(|e| format!("{e:#}"))
        });
        for (r, o) in out.into_iter().enumerate() {
            if r != 1 {
                let e = o.unwrap().unwrap_err();
                assert!(e.contains("rank 1 left the group"), "{e}");
            }
        }
        // Rank 2 stalls past the timeout: the others fail within it, naming rank 2.
        let t = Instant::now();
        let out = run(3, 300, |mut g| {
            if g.rank() == 2 {
                std::thread::sleep(Duration::from_millis(1500));
                return Ok(());
            }
            g.all_reduce_sum(&mut [1.0]).map_err(|e| format!("{e:#}"))
        });
        assert!(t.elapsed() < Duration::from_secs(5));
        for o in out.into_iter().take(2) {
            let e = o.unwrap().unwrap_err();
            assert!(e.contains("for rank(s) 2") || e.contains("rank(s) 2"), "{e}");
        }
        // A panicking rank stops the others too.
        let out = run(2, 20_000, |mut g| {
            if g.rank() == 0 {
                panic!("planted");
            }
            g.all_reduce_sum(&mut [1.0]).map_err(|e| format!("{e:#}"))
        });
        assert!(out[0].is_err());
        let e = out.into_iter().nth(1).unwrap().unwrap().unwrap_err();
        assert!(e.contains("rank 0 left the group"), "{e}");
    }

    #[test]
    fn gathers_every_ranks_values_in_rank_order() {
        let out = run(3, 10_000, |mut g| {
            let mine: Vec<f64> = (0..g.rank()).map(|i| (10 * g.rank() + i) as f64).collect();
            all_gather_f64(&mut g, &mine).unwrap()
        });
        for o in out {
            assert_eq!(o.unwrap(), vec![vec![], vec![10.0], vec![20.0, 21.0]]);
        }
        assert_eq!(all_gather_f64(&mut SingleRank, &[1.0, f64::NAN]).unwrap()[0][0], 1.0);
    }

    #[test]
    fn claims_deal_each_item_once_and_the_faster_rank_takes_more() {
        let out = run(2, 10_000, |mut g| {
            let mut mine = Vec::new();
            while let Some(i) = g.claim(3, 60).unwrap() {
                mine.push(i);
                // Rank 1's items take longer (long responses).
                std::thread::sleep(Duration::from_millis(if g.rank() == 1 { 20 } else { 1 }));
            }
            // A new round starts afresh.
            let again = g.claim(4, 1).unwrap();
            (mine, again)
        });
        let got: Vec<(Vec<usize>, Option<usize>)> = out.into_iter().map(|o| o.unwrap()).collect();
        let mut all: Vec<usize> = got.iter().flat_map(|(m, _)| m.clone()).collect();
        all.sort();
        assert_eq!(all, (0..60).collect::<Vec<_>>());
        assert!(got[0].0.len() > 2 * got[1].0.len(), "rank 0 took {}, rank 1 {}", got[0].0.len(), got[1].0.len());
        assert_eq!(got.iter().filter(|(_, a)| a.is_some()).count(), 1);
    }

    #[test]
    fn mismatched_calls_are_an_error_not_a_hang() {
        let out = run(2, 20_000, |mut g| {
            if g.rank() == 0 {
                g.all_reduce_sum(&mut [1.0, 2.0]).map_err(|e| format!("{e:#}"))
            } else {
                g.broadcast(&mut [1.0, 2.0], 0).map_err(|e| format!("{e:#}"))
            }
        });
        let errs: Vec<String> = out.into_iter().map(|o| o.unwrap().unwrap_err()).collect();
        assert!(errs.iter().any(|e| e.contains("all-reduce") && e.contains("broadcast from rank 0")), "{errs:?}");
    }
}
