//! Launcher of kernels/kv_cache_write.cu (CPU reference: `KvCache::write`, src/ops/cpu/kv_cache.rs).
use super::launch::{grid_1d, need, opt, BF16};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// One layer's K/V cache in device memory: `[num_blocks, block_size, kv_heads, head_dim]` bf16.
pub(crate) fn check_cache(cache: &Buffer, meta: &TokenMeta, num_blocks: usize, kv_dim: usize, kn: &str, what: &str) -> Result<()> {
    ensure!(
        meta.blocks_used <= num_blocks,
        "{kn}: block table names block {} of a {num_blocks}-block cache",
        meta.blocks_used - 1
    );
    need(cache, num_blocks * meta.block_size * kv_dim * BF16, kn, what)
}

/// Writes k (post-RoPE) and v (+ v_bias) `[tokens, kv_dim]` into the cache slots of `meta`.
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(
    dev: &Device,
    k: &Buffer,
    v: &Buffer,
    v_bias: Option<&Buffer>,
    k_cache: &Buffer,
    v_cache: &Buffer,
    meta: &TokenMeta,
    num_blocks: usize,
    kv_dim: usize,
) -> Result<()> {
    let kn = "kv_cache_write_bf16";
    let t = meta.tokens;
    need(k, t * kv_dim * BF16, kn, "k")?;
    need(v, t * kv_dim * BF16, kn, "v")?;
    if let Some(b) = v_bias {
        need(b, kv_dim * BF16, kn, "v_bias")?;
    }
    check_cache(k_cache, meta, num_blocks, kv_dim, kn, "k_cache")?;
    check_cache(v_cache, meta, num_blocks, kv_dim, kn, "v_cache")?;
    let cfg = LaunchConfig { grid: grid_1d(t, kn)?, block: Dim3::x(128), shared_bytes: 0 };
    let args = [
        Arg::Buf(k),
        Arg::Buf(v),
        opt(v_bias),
        Arg::Buf(k_cache),
        Arg::Buf(v_cache),
        Arg::Buf(&meta.positions),
        Arg::Buf(&meta.seq_ids),
        Arg::Buf(&meta.block_tables),
        Arg::I32(meta.max_blocks as i32),
        Arg::I32(meta.block_size as i32),
        Arg::I32(kv_dim as i32),
    ];
    dev.launch(kn, cfg, &args)
}
