//! Launcher of the FlashAttention-2-style prefill attention (kernels/attention_prefill.cu):
//! causal GQA attention of chunks of new tokens over the paged KV cache on tensor cores, and
//! optionally the row log-sum-exp (for a backward pass; the inference forward passes `None`).
//!
//! The grid is a work list of 64-row query tiles, one item per (sequence, tile), built on the host
//! from `TokenMeta::chunks` and uploaded once per forward by [`PrefillPlan::new`] (or
//! [`PrefillPlan::from_chunk`]); every layer's
//! call reuses it. Any chunk length works, 1 included (a decode row is a tile with one valid row:
//! correct, not fast; the decode kernel is for that, and [`PrefillPlan::from_chunk`] leaves a
//! batch's leading decode rows to it).
use super::kv_cache_write::check_cache;
use super::launch::{need, opt};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// Threads per block the kernel is compiled for (PREFILL_THREADS: 4 warps).
pub const PREFILL_THREADS: u32 = 128;
/// Query rows per block (PREFILL_BLOCK_M: 16 per warp).
pub const PREFILL_BLOCK_M: usize = 64;
/// Head dims with a compiled kernel.
pub const PREFILL_HEAD_DIMS: [usize; 2] = [64, 128];

const BF16: usize = 2;

/// The work list of one batch: per 64-row query tile `(first token row, its position, valid rows,
/// sequence)` as int32x4, the tiles with the most visible keys first (the long ones start early
/// instead of forming the grid's tail).
pub struct PrefillPlan {
    work: Buffer,
    items: usize,
    /// The chunks it was built for (checked against each call's metadata).
    chunks: Vec<(usize, usize)>,
    /// Chunks before this one are not attended (another kernel's rows).
    first_chunk: usize,
}

impl PrefillPlan {
    /// The work list of `meta`'s chunks, uploaded; build once per forward, use in every layer.
    pub fn new(dev: &Device, meta: &TokenMeta) -> Result<Self> {
        Self::from_chunk(dev, meta, 0)
    }

    /// The work list of `meta`'s chunks from `first_chunk` on; the rows of the chunks before it
    /// are neither read nor written.
    pub fn from_chunk(dev: &Device, meta: &TokenMeta, first_chunk: usize) -> Result<Self> {
        ensure!(
            first_chunk <= meta.chunks.len(),
            "prefill plan: chunk {first_chunk} of {}",
            meta.chunks.len()
        );
        let mut items: Vec<[i32; 4]> = Vec::new();
        let mut token0: usize = meta.chunks[..first_chunk].iter().map(|&(_, len)| len).sum();
        for (s, &(start, len)) in meta.chunks.iter().enumerate().skip(first_chunk) {
            for m0 in (0..len).step_by(PREFILL_BLOCK_M) {
                let rows = (len - m0).min(PREFILL_BLOCK_M);
                items.push([i32::try_from(token0 + m0)?, i32::try_from(start + m0)?, rows as i32, i32::try_from(s)?]);
            }
            token0 += len;
        }
        ensure!(
            token0 == meta.tokens,
            "prefill plan: the chunks hold {token0} tokens, the metadata {}",
            meta.tokens
        );
        ensure!(items.len() <= i32::MAX as usize, "prefill plan: {} query tiles exceed grid.x", items.len());
        // Visible keys of a tile = position of its last row + 1.
        items.sort_by_key(|it| std::cmp::Reverse(i64::from(it[1]) + i64::from(it[2])));
        Ok(PrefillPlan {
            work: dev.upload(&items)?,
            items: items.len(),
            chunks: meta.chunks.clone(),
            first_chunk,
        })
    }

    /// FLOPs of one call: 4 · Σ_rows (visible keys) · head_dim · num_heads (Q·Kᵀ and P·V, causal;
    /// the masked halves of the diagonal tiles are not counted).
    pub fn flops(&self, num_heads: usize, head_dim: usize) -> u64 {
        // Σ over a chunk's rows of (p + 1) for p in start .. start + len
        let chunks = &self.chunks[self.first_chunk..];
        let pairs: u64 = chunks.iter().map(|&(s, l)| (l as u64) * (2 * s as u64 + l as u64 + 1) / 2).sum();
        4 * pairs * (head_dim * num_heads) as u64
    }
}

/// Causal GQA attention of q `[tokens, num_heads·head_dim]` bf16 over the paged cache
/// (`[num_blocks, block_size, num_kv_heads, head_dim]` bf16 each): `out` (q's shape, bf16) and
/// `lse` `[tokens, num_heads]` f32, the natural log of Σ_j exp(q·k_j / √head_dim), if given (the
/// backward needs it; inference passes `None`). `plan` must have been built from `meta`.
#[allow(clippy::too_many_arguments)]
pub fn prefill_attention(
    dev: &Device,
    plan: &PrefillPlan,
    q: &Buffer,
    k_cache: &Buffer,
    v_cache: &Buffer,
    out: &Buffer,
    lse: Option<&Buffer>,
    meta: &TokenMeta,
    num_blocks: usize,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
) -> Result<()> {
    let kn = match head_dim {
        64 => "prefill_attention_d64_bf16",
        128 => "prefill_attention_d128_bf16",
        _ => anyhow::bail!("prefill_attention: head_dim {head_dim} has no kernel (compiled: {PREFILL_HEAD_DIMS:?})"),
    };
    ensure!(
        num_kv_heads > 0 && num_heads % num_kv_heads == 0,
        "{kn}: {num_heads} heads over {num_kv_heads} KV heads"
    );
    ensure!(num_heads > 0 && num_heads <= 65535, "{kn}: {num_heads} heads (grid.y is 1..=65535)");
    ensure!(
        plan.chunks == meta.chunks,
        "{kn}: the plan was built for other chunks ({} of them) than the metadata's ({})",
        plan.chunks.len(),
        meta.chunks.len()
    );
    let t = meta.tokens;
    need(q, t * num_heads * head_dim * BF16, kn, "q")?;
    need(out, t * num_heads * head_dim * BF16, kn, "out")?;
    if let Some(lse) = lse {
        need(lse, t * num_heads * 4, kn, "lse")?;
    }
    // The kernel indexes cache slots (block · block_size + offset) as int32.
    ensure!(
        num_blocks * meta.block_size <= i32::MAX as usize,
        "{kn}: {num_blocks} blocks of {} slots exceed int32 slot indices",
        meta.block_size
    );
    let kv_dim = num_kv_heads * head_dim;
    check_cache(k_cache, meta, num_blocks, kv_dim, kn, "k_cache")?;
    check_cache(v_cache, meta, num_blocks, kv_dim, kn, "v_cache")?;
    if plan.items == 0 {
        return Ok(()); // no tokens
    }
    let cfg = LaunchConfig {
        grid: Dim3::xy(plan.items as u32, num_heads as u32),
        block: Dim3::x(PREFILL_THREADS),
        shared_bytes: 0,
    };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k_cache),
        Arg::Buf(v_cache),
        Arg::Buf(out),
        opt(lse),
        Arg::Buf(&plan.work),
        Arg::Buf(&meta.block_tables),
        Arg::I32(meta.max_blocks as i32),
        Arg::I32(meta.block_size as i32),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        // softmax in base 2: exp(s/√d) = 2^(s · log2(e)/√d)
        Arg::F32(std::f32::consts::LOG2_E / (head_dim as f32).sqrt()),
    ];
    dev.launch(kn, cfg, &args)
}
