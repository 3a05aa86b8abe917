//! Batched generation on any backend: prefill every prompt, then decode one token per
//! unfinished sequence per step, each sequence in its own blocks of the paged KV cache.
//! (Continuous batching with admission and preemption is the engine issue's scheduler.)

use super::sampler::{sample, Rng, SamplingParams};
use crate::kv::{BlockAllocator, KvCache};
use crate::model::{Model, ModelConfig, SeqChunk};
use anyhow::{bail, Result};

/// What the generation loop needs from a backend: a KV cache of its own kind, and one step
/// that runs a batch of chunks and returns the logits `[chunks, vocab]` of each chunk's last
/// token (only those rows go through the lm_head).
pub trait StepModel {
    type Cache;
    fn config(&self) -> &ModelConfig;
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<Self::Cache>;
    fn last_token_logits(&self, cache: &mut Self::Cache, chunks: &[SeqChunk]) -> Result<Vec<f32>>;
}

impl StepModel for Model {
    type Cache = KvCache;
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<KvCache> {
        Ok(Model::new_cache(self, num_blocks, block_size))
    }
    fn last_token_logits(&self, cache: &mut KvCache, chunks: &[SeqChunk]) -> Result<Vec<f32>> {
        let hidden = self.forward_hidden(cache, chunks)?;
        let h = self.config.hidden_size;
        let mut last_rows = Vec::with_capacity(chunks.len() * h);
        let mut row = 0;
        for ch in chunks {
            row += ch.tokens.len();
            last_rows.extend_from_slice(&hidden[(row - 1) * h..row * h]);
        }
        Ok(self.logits(&last_rows))
    }
}

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
    /// Log-prob of each generated token (see `sampler` for which distribution).
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
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { block_size: 16, max_context: None }
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
    let mut blocks_needed = 0;
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
        blocks_needed += total.div_ceil(opts.block_size);
    }
    let mut alloc = BlockAllocator::new(blocks_needed, opts.block_size);
    let mut cache = model.new_cache(blocks_needed.max(1), opts.block_size)?;
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

    // Each step feeds every unfinished sequence the tokens it has not cached yet: the whole
    // prompt on the first step, one token afterwards.
    let mut cached = vec![0usize; seqs.len()];
    loop {
        let active: Vec<usize> = (0..seqs.len()).filter(|&i| !seqs[i].done).collect();
        if active.is_empty() {
            break;
        }
        for &i in &active {
            let len = seqs[i].tokens.len();
            alloc.ensure_capacity(&mut seqs[i].table, len)?;
        }
        let chunks: Vec<SeqChunk> = active
            .iter()
            .map(|&i| SeqChunk { tokens: &seqs[i].tokens[cached[i]..], start_pos: cached[i], table: &seqs[i].table })
            .collect();
        let logits = model.last_token_logits(&mut cache, &chunks)?;
        drop(chunks);
        let v = model.config().vocab_size;
        for (a, &i) in active.iter().enumerate() {
            let s = &mut seqs[i];
            cached[i] = s.tokens.len();
            let params = &requests[i].params;
            let (tok, lp) = sample(&logits[a * v..(a + 1) * v], params, &mut s.rng);
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
            }
        }
    }
    Ok(seqs.into_iter().map(|s| s.out).collect())
}
