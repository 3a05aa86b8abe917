//! Batched generation on any backend, each sequence in its own blocks of the paged KV cache.
//! Every step runs one forward over the sequences the scheduler picked (`scheduler.rs`): the next
//! chunk of a prompt being prefilled, one token of each sequence being decoded. Blocks are taken
//! as sequences grow; when the cache is full the newest sequences are preempted and recomputed
//! later; the n samples of one prompt share its blocks. A sequence's tokens do not depend on
//! what else is in the batch, nor on preemption: each draw's randomness is keyed on the
//! request's seed and the token's position (`SamplingParams::draw`).

use super::runner::StepModel;
use super::sampler::SamplingParams;
pub use super::scheduler::SchedulerStats;
use super::scheduler::Scheduler;
use crate::model::SeqChunk;
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
    /// KV cache capacity in tokens (rounded down to whole blocks). Blocks are taken as
    /// sequences grow; requests wait for room, and when the cache runs full the newest running
    /// sequences are preempted and recomputed later. The cache costs
    /// `2 · layers · kv_heads · head_dim` values per token (28 KiB in bf16 for
    /// R1-Distill-Qwen-1.5B, so 1M tokens is 28 GiB). `None`: room for every request at once.
    pub max_kv_tokens: Option<usize>,
    /// Most tokens one step computes (decode rows count one each): longer prompts are
    /// prefilled in chunks, so they do not stall the sequences that are decoding.
    pub max_step_tokens: usize,
    /// Consecutive requests with the same prompt share its KV blocks (prefilled once).
    pub share_prompts: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { block_size: 16, max_context: None, max_kv_tokens: None, max_step_tokens: 8192, share_prompts: true }
    }
}

struct Seq {
    tokens: Vec<u32>, // prompt + generated
    prompt_len: usize,
    out: Completion,
}

/// Generates a completion for every request. `on_token(i, token, logprob)` is called as soon as
/// request i produced a token (for streaming).
pub fn generate<M: StepModel>(
    model: &M,
    requests: &[Request],
    opts: &GenerateOptions,
    on_token: impl FnMut(usize, u32, f32),
) -> Result<Vec<Completion>> {
    Ok(generate_with_stats(model, requests, opts, on_token)?.0)
}

/// `generate`, also returning what the scheduler did (steps, preemptions, peak blocks).
pub fn generate_with_stats<M: StepModel>(
    model: &M,
    requests: &[Request],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32, f32),
) -> Result<(Vec<Completion>, SchedulerStats)> {
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
    let bs = opts.block_size;
    let max_new: Vec<usize> = requests.iter().map(|r| r.params.max_new_tokens).collect();
    let everything: usize = requests.iter().filter(|r| r.params.max_new_tokens > 0).map(|r| (r.prompt.len() + r.params.max_new_tokens).div_ceil(bs)).sum();
    let num_blocks = opts.max_kv_tokens.map_or(everything, |t| (t / bs).min(everything)).max(1);
    let prompts: Vec<&[u32]> = requests.iter().map(|r| r.prompt.as_slice()).collect();
    let mut sched = Scheduler::new(&prompts, &max_new, bs, num_blocks, opts.max_step_tokens, opts.share_prompts)
        .context("max_kv_tokens")?;
    let mut cache = model.new_cache(num_blocks, bs).with_context(|| {
        format!("allocating a KV cache of {} tokens for {} requests (max_kv_tokens bounds it)", num_blocks * bs, requests.len())
    })?;
    let mut seqs: Vec<Seq> = requests
        .iter()
        .map(|r| Seq { tokens: r.prompt.clone(), prompt_len: r.prompt.len(), out: Completion { tokens: vec![], logprobs: vec![], finish: FinishReason::Length } })
        .collect();
    loop {
        let work = sched.schedule()?;
        if work.is_empty() {
            break;
        }
        let draws: Vec<_> = work.iter().map(|w| w.sample.then(|| requests[w.seq].params.draw(seqs[w.seq].tokens.len()))).collect();
        let chunks: Vec<SeqChunk> = work
            .iter()
            .map(|w| SeqChunk { tokens: &seqs[w.seq].tokens[w.start..w.start + w.len], start_pos: w.start, table: sched.table(w.seq) })
            .collect();
        let drawn = model.step(&mut cache, &chunks, &draws)?;
        drop(chunks);
        ensure!(drawn.len() == work.len(), "the model returned {} results for {} sequences", drawn.len(), work.len());
        let (mut appended, mut finished) = (vec![false; work.len()], vec![false; work.len()]);
        for (k, (w, d)) in work.iter().zip(&drawn).enumerate() {
            let Some(d) = d else { continue };
            let s = &mut seqs[w.seq];
            let params = &requests[w.seq].params;
            s.tokens.push(d.token);
            s.out.tokens.push(d.token);
            s.out.logprobs.push(d.logprob);
            on_token(w.seq, d.token, d.logprob);
            appended[k] = true;
            if params.stop_token_ids.contains(&d.token) {
                s.out.finish = FinishReason::Stop;
                finished[k] = true;
            } else if s.tokens.len() - s.prompt_len >= params.max_new_tokens {
                finished[k] = true;
            }
        }
        sched.complete(&work, &appended, &finished);
    }
    Ok((seqs.into_iter().map(|s| s.out).collect(), sched.stats))
}
