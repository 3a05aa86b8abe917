//! Which attention kernel a forward uses, chosen once per forward from the batch's shape:
//!
//! - every sequence brings one new token (decode) → the split-KV decode kernel
//!   (kernels/attention_decode.cu), the GQA group's query heads sharing each K/V load (groups
//!   of up to 16 heads; a larger group goes to the prefill kernel, which serves any ratio);
//! - decode rows first, then prefill chunks (continuous batching admits a sequence beside
//!   running ones; `engine::generate` orders them so) → the decode kernel for the leading rows
//!   and the prefill kernel for the chunks after them, writing disjoint rows of the output;
//! - otherwise (prefill, chunked prefill, decode rows after a prefill chunk) → the
//!   FlashAttention-2-style prefill kernel (kernels/attention_prefill.cu) on tensor cores;
//! - head dims without a compiled flash kernel (only 64 and 128 are; the tiny test fixtures
//!   use 12 and 16) → the plain per-head kernel (kernels/attention_paged.cu), which takes any
//!   shape.
//!
//! All three read the same paged cache layout, `[num_blocks, block_size, kv_heads, head_dim]`
//! bf16 (see the kernel headers for why), so the choice can change from one step to the next.

use super::attention_decode::{decode_attention, DecodePlan, DECODE_HEAD_DIMS, DECODE_MAX_GROUP};
use super::attention_prefill::{prefill_attention, PrefillPlan, PREFILL_HEAD_DIMS};
use super::attention_paged::paged_attention;
use super::meta::TokenMeta;
use crate::device::{Buffer, Device};
use anyhow::Result;

/// The attention of one forward: its kernel and what that kernel reuses across layers.
pub enum AttentionPlan {
    Decode(DecodePlan),
    /// The work list (the forward passes no LSE buffer: inference does not need the row
    /// log-sum-exp).
    Prefill(PrefillPlan),
    /// Decode for the leading one-token sequences, prefill for the chunks after them.
    Mixed(DecodePlan, PrefillPlan),
    Plain,
}

impl AttentionPlan {
    pub fn new(dev: &Device, meta: &TokenMeta, num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        let lead = meta.chunks.iter().take_while(|&&(_, len)| len == 1).count();
        let group = num_heads / num_kv_heads.max(1);
        let decode_ok = DECODE_HEAD_DIMS.contains(&head_dim) && group <= DECODE_MAX_GROUP;
        let prefill_ok = PREFILL_HEAD_DIMS.contains(&head_dim);
        Ok(if decode_ok && lead == meta.chunks.len() {
            AttentionPlan::Decode(DecodePlan::new(dev, meta, num_heads, num_kv_heads, head_dim)?)
        } else if decode_ok && prefill_ok && lead > 0 {
            AttentionPlan::Mixed(
                DecodePlan::for_leading(dev, meta, lead, num_heads, num_kv_heads, head_dim)?,
                PrefillPlan::from_chunk(dev, meta, lead)?,
            )
        } else if prefill_ok {
            AttentionPlan::Prefill(PrefillPlan::new(dev, meta)?)
        } else {
            AttentionPlan::Plain
        })
    }

    /// The kernel's name, for logs and tests.
    pub fn kernel(&self) -> &'static str {
        match self {
            AttentionPlan::Decode(_) => "attention_decode",
            AttentionPlan::Prefill(_) => "prefill_attention",
            AttentionPlan::Mixed(..) => "attention_decode+prefill_attention",
            AttentionPlan::Plain => "paged_attention_bf16",
        }
    }

    /// `out` = causal attention of `q` `[tokens, heads·head_dim]` over one layer's cache.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        dev: &Device,
        q: &Buffer,
        k_cache: &Buffer,
        v_cache: &Buffer,
        out: &Buffer,
        meta: &TokenMeta,
        num_blocks: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        match self {
            AttentionPlan::Decode(p) => decode_attention(dev, p, q, k_cache, v_cache, out, None, meta, num_blocks),
            AttentionPlan::Prefill(p) => prefill_attention(
                dev,
                p,
                q,
                k_cache,
                v_cache,
                out,
                None,
                meta,
                num_blocks,
                num_heads,
                num_kv_heads,
                head_dim,
            ),
            AttentionPlan::Mixed(d, p) => {
                decode_attention(dev, d, q, k_cache, v_cache, out, None, meta, num_blocks)?;
                prefill_attention(dev, p, q, k_cache, v_cache, out, None, meta, num_blocks, num_heads, num_kv_heads, head_dim)
            }
            AttentionPlan::Plain => paged_attention(
                dev,
                q,
                k_cache,
                v_cache,
                out,
                meta,
                num_blocks,
                num_heads,
                num_kv_heads,
                head_dim,
            ),
        }
    }
}
