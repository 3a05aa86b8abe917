//! Which sequences run in the next step, with how many of their tokens: continuous batching with
//! KV blocks taken on demand, preemption by recompute, chunked prefill under a per-step token
//! budget, and the n samples of one prompt sharing that prompt's blocks. The scheduler works on
//! plain data (token counts, block tables); it never touches a tensor.
//!
//! A step, in order:
//! 1. Running sequences, oldest first, each bring the tokens it has not cached yet (one while
//!    decoding; the next chunk of its prompt while prefilling), within the step's token budget.
//!    Its table grows to cover them. When no block is free, the newest running sequence is
//!    preempted: its blocks go back, it returns to the front of the queue with its tokens
//!    (prompt and generated so far), and later recomputes their K/V in a prefill. Nothing is
//!    lost and, because each draw's randomness is keyed on (seed, position) and not on a stream,
//!    it draws the same tokens as if it had never been preempted.
//! 2. Waiting sequences, in order, start while the budget and the free blocks allow, leaving one
//!    block per running sequence free so that decoding does not immediately preempt them.
//!
//! Sharing: consecutive requests with the same prompt form a group. The first to start (the
//! group's leader) computes the prompt; the others join once the full blocks before the one
//! holding the last prompt token are computed (possibly in the same step: every backend writes a
//! layer's K/V for the whole batch before that layer's attention reads any), pointing their
//! tables at those reference-counted blocks and computing only the tail. No block is written by
//! two sequences, so no copy-on-write. A preempted member that comes back reuses the shared
//! blocks while any member still holds them.

use crate::kv::BlockAllocator;
use anyhow::{bail, Result};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
}

/// One sequence's bookkeeping.
struct Seq {
    /// Tokens so far: the prompt, then every generated token.
    len: usize,
    prompt_len: usize,
    /// Tokens whose K/V are in the cache.
    cached: usize,
    table: Vec<u32>,
    group: usize,
    state: State,
    /// Whether its table's first `shared` entries are the group's shared blocks.
    holds_shared: bool,
}

/// Requests with the same prompt; `shared` blocks (the prompt's full blocks before the one
/// holding its last token) are computed once and held by reference.
struct Group {
    shared: usize,
    /// The shared blocks, while some member holds them.
    blocks: Option<Vec<u32>>,
    holders: usize,
    /// Whether the shared blocks' K/V are computed (or will be by the end of this step).
    computed: bool,
}

/// One sequence's part of a step: its tokens `start .. start + len`, and whether the step ends
/// its known tokens (then the model draws its next token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub seq: usize,
    pub start: usize,
    pub len: usize,
    pub sample: bool,
}

/// What the scheduler has done, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub steps: usize,
    pub preemptions: usize,
    /// Most blocks in use at once.
    pub peak_blocks: usize,
    /// Most sequences in one step.
    pub peak_running: usize,
}

pub struct Scheduler {
    alloc: BlockAllocator,
    seqs: Vec<Seq>,
    groups: Vec<Group>,
    waiting: VecDeque<usize>,
    /// Running sequences in the order they started (oldest first).
    running: Vec<usize>,
    max_step_tokens: usize,
    pub stats: SchedulerStats,
}

impl Scheduler {
    /// `prompts[i]` and `max_new[i]` of every request; those with `max_new == 0` never run.
    /// `num_blocks` of `block_size` tokens in the cache; at most `max_step_tokens` tokens per
    /// step (a prompt longer than that is prefilled in chunks). A request that could never fit
    /// the cache alone is refused here, naming it.
    pub fn new(prompts: &[&[u32]], max_new: &[usize], block_size: usize, num_blocks: usize, max_step_tokens: usize, share: bool) -> Result<Self> {
        if block_size == 0 || max_step_tokens == 0 {
            bail!("block_size and the step's token budget must be at least 1");
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut seqs = Vec::with_capacity(prompts.len());
        let mut waiting = VecDeque::new();
        for (i, (p, &m)) in prompts.iter().zip(max_new).enumerate() {
            let need = (p.len() + m).div_ceil(block_size);
            if m > 0 && need > num_blocks {
                bail!(
                    "request {i}: prompt ({} tokens) + max_new_tokens ({m}) needs {} tokens of KV cache; max_kv_tokens allows {}",
                    p.len(),
                    need * block_size,
                    num_blocks * block_size
                );
            }
            let shared = if share { (p.len().max(1) - 1) / block_size } else { 0 };
            let joins = i > 0 && shared > 0 && prompts[i - 1] == *p && seqs.last().is_some_and(|s: &Seq| groups[s.group].shared == shared);
            if !joins {
                groups.push(Group { shared, blocks: None, holders: 0, computed: false });
            }
            let state = if m > 0 { State::Waiting } else { State::Done };
            seqs.push(Seq { len: p.len(), prompt_len: p.len(), cached: 0, table: Vec::new(), group: groups.len() - 1, state, holds_shared: false });
            if m > 0 {
                waiting.push_back(i);
            }
        }
        Ok(Scheduler {
            alloc: BlockAllocator::new(num_blocks, block_size),
            seqs,
            groups,
            waiting,
            running: Vec::new(),
            max_step_tokens,
            stats: SchedulerStats::default(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.alloc.block_size()
    }

    pub fn table(&self, seq: usize) -> &[u32] {
        &self.seqs[seq].table
    }

    pub fn is_done(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn blocks_in_use(&self) -> usize {
        self.alloc.num_blocks() - self.alloc.num_free()
    }

    /// Blocks to cover `len` tokens beyond what `table` has.
    fn blocks_for(&self, table_len: usize, len: usize) -> usize {
        len.div_ceil(self.alloc.block_size()).saturating_sub(table_len)
    }

    /// Gives back every block of `seq` (its share of the group's blocks too).
    fn release(&mut self, seq: usize) {
        let s = &mut self.seqs[seq];
        self.alloc.release_table(&mut s.table);
        if std::mem::take(&mut s.holds_shared) {
            let g = &mut self.groups[s.group];
            g.holders -= 1;
            if g.holders == 0 {
                g.blocks = None;
                g.computed = false;
            }
        }
    }

    /// Sends the newest running sequence back to the front of the queue; false if none runs.
    fn preempt_newest(&mut self) -> bool {
        let Some(victim) = self.running.pop() else { return false };
        self.release(victim);
        let s = &mut self.seqs[victim];
        s.cached = 0;
        s.state = State::Waiting;
        self.waiting.push_front(victim);
        self.stats.preemptions += 1;
        true
    }

    /// Starts `seq`'s table: the group's shared blocks when they are (being) computed, so it
    /// begins after them. Returns the first token it must compute.
    fn attach_shared(&mut self, seq: usize) -> usize {
        let g = self.seqs[seq].group;
        let (shared, computed) = (self.groups[g].shared, self.groups[g].computed);
        match &self.groups[g].blocks {
            Some(blocks) if computed && self.seqs[seq].table.is_empty() => {
                let blocks = blocks.clone();
                blocks.iter().for_each(|&b| self.alloc.retain(b));
                let s = &mut self.seqs[seq];
                s.table = blocks;
                s.holds_shared = true;
                s.cached = shared * self.alloc.block_size();
                self.groups[g].holders += 1;
                s.cached
            }
            _ => self.seqs[seq].cached,
        }
    }

    /// After `seq`'s table covers the group's shared region and this step computes it, the
    /// group's later members can attach to it.
    fn publish_shared(&mut self, seq: usize, covered: usize) {
        let g = self.seqs[seq].group;
        let shared = self.groups[g].shared;
        let bs = self.alloc.block_size();
        if shared == 0 || self.groups[g].blocks.is_some() || covered < shared * bs {
            return;
        }
        let blocks = self.seqs[seq].table[..shared].to_vec();
        self.groups[g].blocks = Some(blocks);
        self.groups[g].computed = true;
        self.groups[g].holders += 1;
        self.seqs[seq].holds_shared = true;
    }

    /// Plans the next step (see the module docs). Empty only when everything is done.
    pub fn schedule(&mut self) -> Result<Vec<Work>> {
        let mut work: Vec<Work> = Vec::new();
        let mut budget = self.max_step_tokens;
        // 1. Running sequences, oldest first; preempt the newest when blocks run out.
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = self.running[i];
            let s = &self.seqs[seq];
            let len = (s.len - s.cached).min(budget);
            let need = self.blocks_for(s.table.len(), s.cached + len);
            if need > self.alloc.num_free() {
                // Make room from the newest; if the newest is this one, it waits.
                if self.running.len() - 1 == i {
                    self.preempt_newest();
                    break;
                }
                self.preempt_newest();
                continue;
            }
            self.grow(seq, len)?;
            work.push(self.work_item(seq, len));
            budget -= len;
            i += 1;
        }
        // 2. Waiting sequences, in order, while the budget and the blocks allow.
        while budget > 0 {
            let Some(&seq) = self.waiting.front() else { break };
            let start = self.attach_shared(seq);
            let s = &self.seqs[seq];
            let len = (s.len - start).min(budget);
            let need = self.blocks_for(s.table.len(), start + len);
            // Leave one block per running sequence so it can grow this step and the next.
            if need + self.running.len() > self.alloc.num_free() && !(self.running.is_empty() && need <= self.alloc.num_free()) {
                if self.seqs[seq].holds_shared {
                    self.release(seq);
                    self.seqs[seq].cached = 0;
                }
                break;
            }
            self.waiting.pop_front();
            self.seqs[seq].state = State::Running;
            self.running.push(seq);
            self.grow(seq, len)?;
            work.push(self.work_item(seq, len));
            budget -= len;
        }
        if work.is_empty() && !self.is_done() {
            bail!("no sequence can run: the KV cache is too small for the next waiting one (max_kv_tokens)");
        }
        self.stats.steps += usize::from(!work.is_empty());
        self.stats.peak_blocks = self.stats.peak_blocks.max(self.blocks_in_use());
        self.stats.peak_running = self.stats.peak_running.max(work.len());
        Ok(work)
    }

    fn grow(&mut self, seq: usize, len: usize) -> Result<()> {
        let s = &mut self.seqs[seq];
        self.alloc.ensure_capacity(&mut s.table, s.cached + len)?;
        let covered = s.cached + len;
        self.publish_shared(seq, covered);
        Ok(())
    }

    fn work_item(&self, seq: usize, len: usize) -> Work {
        let s = &self.seqs[seq];
        Work { seq, start: s.cached, len, sample: s.cached + len == s.len }
    }

    /// Records the step: every work item's tokens are cached; `appended[i]` says whether work
    /// item i's sequence got a new token, and `finished[i]` whether it is done (its blocks are
    /// given back).
    pub fn complete(&mut self, work: &[Work], appended: &[bool], finished: &[bool]) {
        for ((w, &app), &fin) in work.iter().zip(appended).zip(finished) {
            let s = &mut self.seqs[w.seq];
            s.cached = w.start + w.len;
            if app {
                s.len += 1;
            }
            if fin {
                s.state = State::Done;
                self.release(w.seq);
                self.running.retain(|&r| r != w.seq);
            }
        }
    }

    /// Tokens of the prompt of `seq` (for checks).
    pub fn prompt_len(&self, seq: usize) -> usize {
        self.seqs[seq].prompt_len
    }
}
