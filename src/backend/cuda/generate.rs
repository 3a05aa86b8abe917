//! Batched generation on the CUDA backend: the loop of src/engine/generate.rs (prefill every
//! prompt, then one token per unfinished sequence per step, each sequence in its own blocks of
//! the paged cache) with the forward on the device. Only the last row of each chunk goes
//! through the lm_head; its f32 logits are downloaded and sampled on the host with
//! src/engine/sampler.rs (device-side sampling is the sampling kernel's issue).

use super::model::CudaModel;
use crate::engine::sampler::{sample, Rng};
use crate::engine::{Completion, FinishReason, GenerateOptions, Request};
use crate::kv::BlockAllocator;
use crate::model::SeqChunk;
use anyhow::{bail, Result};

struct Seq {
    tokens: Vec<u32>,
    prompt_len: usize,
    table: Vec<u32>,
    rng: Rng,
    out: Completion,
    done: bool,
}

/// Generates a completion for every request; `on_token(i, token, logprob)` streams them.
pub fn generate(
    model: &CudaModel,
    requests: &[Request],
    opts: &GenerateOptions,
    mut on_token: impl FnMut(usize, u32, f32),
) -> Result<Vec<Completion>> {
    let max_ctx = opts.max_context.unwrap_or(model.config.max_position_embeddings);
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
        let hidden = model.forward_hidden(&mut cache, &chunks)?;
        let mut last_rows = Vec::with_capacity(chunks.len());
        let mut row = 0;
        for ch in &chunks {
            row += ch.tokens.len();
            last_rows.push(row - 1);
        }
        drop(chunks);
        let logits = model.logits(&hidden, &last_rows)?;
        let v = model.config.vocab_size;
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
