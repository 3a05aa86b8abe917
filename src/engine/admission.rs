//! Which requests `generate` starts when: continuous batching under a KV budget, with the n
//! samples of one prompt sharing that prompt's KV blocks.
//!
//! Requests form *groups*: consecutive requests with the same prompt (GRPO's n samples, pass@k's
//! k) share the blocks that hold the prompt's first `shared_blocks · block_size` tokens, every
//! full block before the one holding the last prompt token. The first member's prefill writes
//! them; the others prefill only the tail (1 to block_size tokens) into blocks of their own, in
//! the same forward (every backend writes a layer's K/V for the whole batch before that layer's
//! attention reads any). The tail is recomputed rather than copied so no block is ever written by
//! two sequences (no copy-on-write needed), and each member gets its own last-token logits.
//!
//! A group reserves `shared_blocks + Σ own blocks` (each member's prompt + max_new_tokens beyond
//! the shared part) and is admitted, in order, as one unit once that fits beside the running
//! groups; a member gives back its own blocks when it finishes, the last one the shared blocks.
//! Reserving everything up front means nothing ever runs out of blocks (no preemption). A group
//! that would not fit the budget is split into smaller groups of the same prompt.

use super::generate::Request;
use anyhow::{bail, Result};
use std::collections::VecDeque;

/// Requests that start together and share their prompt's first `shared_blocks` blocks.
pub struct Group {
    /// Request indices; the first one writes the shared blocks.
    pub members: Vec<usize>,
    pub shared_blocks: usize,
    /// Members still running.
    live: usize,
}

pub struct Admission {
    pub groups: Vec<Group>,
    /// Blocks of the cache: the budget, or what every group needs at once if that is less.
    pub num_blocks: usize,
    waiting: VecDeque<usize>,
    group_of: Vec<usize>,
    /// Per request: blocks beyond the shared ones.
    own: Vec<usize>,
    reserved: usize,
}

impl Admission {
    /// Groups for the requests with `runs[i]` (the others never start). `budget` in blocks.
    pub fn plan(requests: &[Request], runs: &[bool], block_size: usize, budget: Option<usize>, share: bool) -> Result<Self> {
        let mut groups: Vec<Group> = Vec::new();
        let mut need_of_group: Vec<usize> = Vec::new();
        let mut group_of = vec![usize::MAX; requests.len()];
        let mut own = vec![0; requests.len()];
        for (i, r) in requests.iter().enumerate() {
            if !runs[i] {
                continue;
            }
            let need = (r.prompt.len() + r.params.max_new_tokens).div_ceil(block_size);
            if let Some(b) = budget.filter(|&b| need > b) {
                bail!(
                    "request {i}: prompt ({} tokens) + max_new_tokens ({}) needs {} tokens of KV cache; \
                     max_kv_tokens allows {}",
                    r.prompt.len(),
                    r.params.max_new_tokens,
                    need * block_size,
                    b * block_size
                );
            }
            let shared = if share { (r.prompt.len() - 1) / block_size } else { 0 };
            let joins = match (groups.last(), need_of_group.last()) {
                (Some(g), Some(&g_need)) => {
                    shared > 0
                        && requests[g.members[0]].prompt == r.prompt
                        && budget.is_none_or(|b| g_need + need - shared <= b)
                }
                _ => false,
            };
            if joins {
                let g = groups.len() - 1;
                groups[g].members.push(i);
                need_of_group[g] += need - shared;
            } else {
                groups.push(Group { members: vec![i], shared_blocks: shared, live: 0 });
                need_of_group.push(need);
            }
            group_of[i] = groups.len() - 1;
            own[i] = need - groups[group_of[i]].shared_blocks;
        }
        let all: usize = need_of_group.iter().sum();
        let num_blocks = budget.map_or(all, |b| b.min(all)).max(1);
        Ok(Admission { waiting: (0..groups.len()).collect(), groups, num_blocks, group_of, own, reserved: 0 })
    }

    fn need(&self, g: usize) -> usize {
        let group = &self.groups[g];
        group.shared_blocks + group.members.iter().map(|&i| self.own[i]).sum::<usize>()
    }

    /// The waiting groups that fit now, in order (stopping at the first that does not).
    pub fn admit(&mut self) -> Vec<usize> {
        let mut admitted = Vec::new();
        while let Some(&g) = self.waiting.front() {
            let need = self.need(g);
            if self.reserved + need > self.num_blocks {
                break;
            }
            self.reserved += need;
            self.groups[g].live = self.groups[g].members.len();
            admitted.push(self.waiting.pop_front().unwrap());
        }
        admitted
    }

    /// Request `i` finished: its own blocks are free again, and with the group's last member the
    /// shared ones.
    pub fn finish(&mut self, i: usize) {
        let g = &mut self.groups[self.group_of[i]];
        self.reserved -= self.own[i];
        g.live -= 1;
        if g.live == 0 {
            self.reserved -= g.shared_blocks;
        }
    }
}
