//! Batched generation on any backend, each sequence in its own blocks of the paged KV cache.
//! Every step runs one forward over the running sequences: a newly admitted sequence brings its
//! whole prompt (prefill), the others one token (decode).
//!
//! Admission (continuous batching, `admission.rs`): requests start in order once the blocks for
//! their prompt + max_new_tokens fit in the cache beside those reserved by the running
//! sequences; a finished sequence gives its blocks back and the next waiting request starts on
//! the following step. Consecutive requests with the same prompt start together and share the
//! prompt's KV blocks, which are prefilled once. Without `max_kv_tokens` the cache holds every
//! request at once. (Chunked prefill and preemption by recompute are the scheduler's next
//! steps.) A sequence's tokens do not depend on what else is in the batch.

use super::admission::Admission;
use super::runner::StepModel;
use super::sampler::SamplingParams;
use crate::kv::BlockAllocator;
use crate::model::SeqChunk;
use crate::util::Rng;
use anyhow::{bail, ensure, Context, Result};

#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop (EOS) token was generated; it is the last token of the completion.
    Stop,
    /// max_new_tokens was reached.
    Length,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Completion {
    pub tokens: Vec<u32>,
    /// Log-prob of each generated token under softmax(logits / T), before top-k/top-p (the
    /// raw logits for greedy).
    pub logprobs: Vec<f32>,
    pub finish: FinishReason,
}

/// Options of the generation loop.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Longest prompt + completion; defaults to the model's max_position_embeddings.
    pub max_context: Option<usize>,
    /// KV cache capacity in tokens (rounded down to whole blocks): requests wait for room. The
    /// cache costs `2 · layers · kv_heads · head_dim` values per token (28 KiB in bf16 for
    /// R1-Distill-Qwen-1.5B, so 1M tokens is 28 GiB). `None`: room for every request at once.
    pub max_kv_tokens: Option<usize>,
    /// Consecutive requests with the same prompt share its KV blocks (prefilled once).
    pub share_prompts: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { block_size: 16, max_context: None, max_kv_tokens: None, share_prompts: true }
    }
}

struct Seq {
    tokens: Vec<u32>, // prompt + generated
    prompt_len: usize,
    table: Vec<u32>,
    rng: Rng,
    out: Completion,
    done: bool,
}

/// Generates a completion for every request. `on_token(i, token, logprob)` is called as soon as
/// request i produced a token (for streaming).
pub fn generate<M: StepModel>(
    model: &M,
    requests: &[Request],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32, f32),
) -> Result<Vec<Completion>> {
    let max_ctx = opts.max_context.unwrap_or(model.config().max_position_embeddings);
    if opts.block_size == 0 {
        bail!("block_size must be at least 1");
    }
    for (i, r) in requests.iter().enumerate() {
        r.params.validate()?;
        if r.prompt.is_empty() {
            bail!("request {i}: the prompt is empty");
        }
        let total = r.prompt.len() + r.params.max_new_tokens;
        if total > max_ctx {
            bail!(
                "request {i}: prompt ({} tokens) + max_new_tokens ({}) exceeds the context of {max_ctx} tokens",
                r.prompt.len(),
                r.params.max_new_tokens
            );
        }
    }
    let runs: Vec<bool> = requests.iter().map(|r| r.params.max_new_tokens > 0).collect();
    let budget = opts.max_kv_tokens.map(|t| t / opts.block_size);
    let mut admission = Admission::plan(requests, &runs, opts.block_size, budget, opts.share_prompts)?;
    let num_blocks = admission.num_blocks;
    let mut alloc = BlockAllocator::new(num_blocks, opts.block_size);
    let mut cache = model.new_cache(num_blocks, opts.block_size).with_context(|| {
        format!(
            "allocating a KV cache of {} tokens for {} requests (max_kv_tokens bounds it)",
            num_blocks * opts.block_size,
            requests.len()
        )
    })?;
    let mut seqs: Vec<Seq> = requests
        .iter()
        .map(|r| Seq {
            tokens: r.prompt.clone(),
            prompt_len: r.prompt.len(),
            table: Vec::new(),
            rng: Rng::new(r.params.seed),
            out: Completion { tokens: vec![], logprobs: vec![], finish: FinishReason::Length },
            done: r.params.max_new_tokens == 0,
        })
        .collect();

    // Each step feeds every running sequence the tokens it has not cached yet: the whole
    // prompt on its first step, one token afterwards.
    let mut cached = vec![0usize; seqs.len()];
    let mut running: Vec<usize> = Vec::new();
    loop {
        for g in admission.admit() {
            let (members, shared) = (admission.groups[g].members.clone(), admission.groups[g].shared_blocks);
            // The first member's blocks for its prompt; the others point at its shared ones and
            // prefill only the tokens after them.
            let first = members[0];
            let len = seqs[first].tokens.len();
            alloc.ensure_capacity(&mut seqs[first].table, len)?;
            for &m in &members[1..] {
                let table = seqs[first].table[..shared].to_vec();
                table.iter().for_each(|&b| alloc.retain(b));
                seqs[m].table = table;
                cached[m] = shared * opts.block_size;
            }
            running.extend(members);
        }
        if running.is_empty() {
            break;
        }
        for &i in &running {
            let len = seqs[i].tokens.len();
            alloc.ensure_capacity(&mut seqs[i].table, len)?;
        }
        // Drawn before the step so that each request's stream advances once per token.
        let draws: Vec<_> = running.iter().map(|&i| requests[i].params.draw(&mut seqs[i].rng)).collect();
        let chunks: Vec<SeqChunk> = running
            .iter()
            .map(|&i| SeqChunk { tokens: &seqs[i].tokens[cached[i]..], start_pos: cached[i], table: &seqs[i].table })
            .collect();
        let drawn = model.step(&mut cache, &chunks, &draws)?;
        drop(chunks);
        ensure!(drawn.len() == running.len(), "the model drew {} tokens for {} sequences", drawn.len(), running.len());
        for (d, &i) in drawn.iter().zip(&running) {
            let s = &mut seqs[i];
            cached[i] = s.tokens.len();
            let params = &requests[i].params;
            let (tok, lp) = (d.token, d.logprob);
            s.tokens.push(tok);
            s.out.tokens.push(tok);
            s.out.logprobs.push(lp);
            on_token(i, tok, lp);
            if params.stop_token_ids.contains(&tok) {
                s.out.finish = FinishReason::Stop;
                s.done = true;
            } else if s.tokens.len() - s.prompt_len >= params.max_new_tokens {
                s.done = true;
            }
            if s.done {
                alloc.release_table(&mut s.table);
                admission.finish(i);
            }
        }
        running.retain(|&i| !seqs[i].done);
    }
    Ok(seqs.into_iter().map(|s| s.out).collect())
}
