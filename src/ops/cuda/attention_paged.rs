//! Launcher of kernels/attention_paged.cu, the plain per-head attention that takes any head
//! dim (CPU reference: `paged_attention`, src/ops/cpu/attention.rs).
use super::kv_cache_write::check_cache;
use super::launch::{grid_1d, need, BF16};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// Block size `paged_attention_bf16` is compiled for (ATTN_THREADS) and its head_dim limit.
pub const ATTN_THREADS: u32 = 128;
pub const ATTN_MAX_HEAD_DIM: usize = 256;

/// Causal GQA attention of q `[tokens, nh·d]` over the paged cache; `out` has q's shape.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
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
    let kn = "paged_attention_bf16";
    ensure!(head_dim <= ATTN_MAX_HEAD_DIM, "{kn}: head_dim {head_dim} > {ATTN_MAX_HEAD_DIM}");
    ensure!(num_kv_heads > 0 && num_heads % num_kv_heads == 0, "{kn}: {num_heads} heads over {num_kv_heads} KV heads");
    ensure!(num_heads <= 65535, "{kn}: {num_heads} heads exceed grid.y");
    let t = meta.tokens;
    need(q, t * num_heads * head_dim * BF16, kn, "q")?;
    need(out, t * num_heads * head_dim * BF16, kn, "out")?;
    let kv_dim = num_kv_heads * head_dim;
    check_cache(k_cache, meta, num_blocks, kv_dim, kn, "k_cache")?;
    check_cache(v_cache, meta, num_blocks, kv_dim, kn, "v_cache")?;
    let cfg = LaunchConfig {
        grid: Dim3::xy(grid_1d(t, kn)?.x, num_heads as u32),
        block: Dim3::x(ATTN_THREADS),
        shared_bytes: 0,
    };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k_cache),
        Arg::Buf(v_cache),
        Arg::Buf(out),
        Arg::Buf(&meta.positions),
        Arg::Buf(&meta.seq_ids),
        Arg::Buf(&meta.block_tables),
        Arg::I32(meta.max_blocks as i32),
        Arg::I32(meta.block_size as i32),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::F32(1.0 / (head_dim as f32).sqrt()),
    ];
    dev.launch(kn, cfg, &args)
}
