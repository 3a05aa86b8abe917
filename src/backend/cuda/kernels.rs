//! Typed launchers of the kernels in `kernels/*.cu`: each one checks buffer sizes on the host
//! (a kernel trusts its pointers), picks the launch shape its file documents, and launches by
//! name through the device layer. The model forward and the parity tests both go through these.
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{bail, ensure, Result};

/// Threads per block of the row kernels (rmsnorm, embedding gather) and element-wise kernels.
const ROW_THREADS: u32 = 256;
/// Grid cap of the grid-stride element-wise kernels.
const MAX_GRID: usize = 4096;
/// Block size `paged_attention_bf16` is compiled for (ATTN_THREADS) and its head_dim limit.
pub const ATTN_THREADS: u32 = 128;
pub const ATTN_MAX_HEAD_DIM: usize = 256;

pub(crate) fn need(b: &Buffer, bytes: usize, kernel: &str, what: &str) -> Result<()> {
    if b.len_bytes() < bytes {
        bail!("{kernel}: `{what}` holds {} bytes, the launch needs {bytes}", b.len_bytes());
    }
    Ok(())
}

fn grid_1d(rows: usize, kernel: &str) -> Result<Dim3> {
    ensure!(rows > 0 && rows <= i32::MAX as usize, "{kernel}: {rows} rows is not a valid grid");
    Ok(Dim3::x(rows as u32))
}

/// An optional buffer argument: a null pointer when absent.
pub(crate) fn opt(b: Option<&Buffer>) -> Arg<'_> {
    b.map_or(Arg::U64(0), Arg::Buf)
}

fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(ROW_THREADS as usize).clamp(1, MAX_GRID);
    LaunchConfig { grid: Dim3::x(blocks as u32), block: Dim3::x(ROW_THREADS), shared_bytes: 0 }
}

const BF16: usize = 2;

/// `residual += x` (if given), `out = rmsnorm(residual) * weight`, rows of `hidden`.
pub fn rmsnorm_residual(
    dev: &Device,
    x: Option<&Buffer>,
    residual: &Buffer,
    weight: &Buffer,
    out: &Buffer,
    rows: usize,
    hidden: usize,
    eps: f32,
) -> Result<()> {
    let k = "rmsnorm_residual_bf16";
    let n = rows * hidden * BF16;
    if let Some(x) = x {
        need(x, n, k, "x")?;
    }
    need(residual, n, k, "residual")?;
    need(out, n, k, "out")?;
    need(weight, hidden * BF16, k, "weight")?;
    let cfg = LaunchConfig { grid: grid_1d(rows, k)?, block: Dim3::x(ROW_THREADS), shared_bytes: 0 };
    dev.launch(
        k,
        cfg,
        &[opt(x), Arg::Buf(residual), Arg::Buf(weight), Arg::Buf(out), Arg::I32(hidden as i32), Arg::F32(eps)],
    )
}

/// `out[r] = table[ids[r]]`; `ids` int32 `[rows]`, `table` `[table_rows, hidden]` bf16.
pub fn embedding_gather(
    dev: &Device,
    ids: &Buffer,
    table: &Buffer,
    out: &Buffer,
    rows: usize,
    hidden: usize,
    table_rows: usize,
) -> Result<()> {
    let k = "embedding_gather_bf16";
    need(ids, rows * 4, k, "ids")?;
    need(table, table_rows * hidden * BF16, k, "table")?;
    need(out, rows * hidden * BF16, k, "out")?;
    let cfg = LaunchConfig { grid: grid_1d(rows, k)?, block: Dim3::x(ROW_THREADS), shared_bytes: 0 };
    dev.launch(
        k,
        cfg,
        &[Arg::Buf(ids), Arg::Buf(table), Arg::Buf(out), Arg::I32(hidden as i32), Arg::I32(table_rows as i32)],
    )
}

/// `out = silu(gate) * up` over `n` elements (`out` may be `gate`).
pub fn silu_mul(dev: &Device, gate: &Buffer, up: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "silu_mul_bf16";
    for (b, w) in [(gate, "gate"), (up, "up"), (out, "out")] {
        need(b, n * BF16, k, w)?;
    }
    dev.launch(k, elementwise(n), &[Arg::Buf(gate), Arg::Buf(up), Arg::Buf(out), Arg::I64(n as i64)])
}

pub fn cast_f32_to_bf16(dev: &Device, input: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "cast_f32_to_bf16";
    need(input, n * 4, k, "in")?;
    need(out, n * BF16, k, "out")?;
    dev.launch(k, elementwise(n), &[Arg::Buf(input), Arg::Buf(out), Arg::I64(n as i64)])
}

pub fn cast_bf16_to_f32(dev: &Device, input: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "cast_bf16_to_f32";
    need(input, n * BF16, k, "in")?;
    need(out, n * 4, k, "out")?;
    dev.launch(k, elementwise(n), &[Arg::Buf(input), Arg::Buf(out), Arg::I64(n as i64)])
}

/// Where the tokens of a batch sit: per token its position and sequence, per sequence its block
/// table (padded with −1 to `max_blocks`), all int32 in device memory.
pub struct TokenMeta {
    pub tokens: usize,
    pub block_size: usize,
    /// 1 + the largest physical block id in the tables (checked against the cache's size).
    pub blocks_used: usize,
    pub num_seqs: usize,
    pub max_blocks: usize,
    /// Host copy of each sequence's chunk `(start_pos, len)`, in row order: the attention
    /// launchers plan their grids (tiles, KV splits) from it without a download.
    pub chunks: Vec<(usize, usize)>,
    pub positions: Buffer,
    pub seq_ids: Buffer,
    pub block_tables: Buffer,
}

impl TokenMeta {
    /// `seqs[s] = (start_pos, len, table)`: tokens `start_pos .. start_pos + len` of sequence s,
    /// whose table must cover them with blocks of `block_size` positions.
    pub fn upload(dev: &Device, seqs: &[(usize, usize, &[u32])], block_size: usize) -> Result<Self> {
        ensure!(block_size > 0, "block size 0");
        let max_blocks = seqs.iter().map(|s| s.2.len()).max().unwrap_or(0).max(1);
        let (mut positions, mut seq_ids) = (Vec::new(), Vec::new());
        let mut tables = vec![-1i32; seqs.len().max(1) * max_blocks];
        let mut blocks_used = 0;
        for (s, &(start, len, table)) in seqs.iter().enumerate() {
            if start + len > table.len() * block_size {
                bail!(
                    "sequence {s}: block table covers {} positions, the chunk needs {}",
                    table.len() * block_size,
                    start + len
                );
            }
            blocks_used = table.iter().map(|&b| b as usize + 1).fold(blocks_used, usize::max);
            for p in start..start + len {
                positions.push(i32::try_from(p)?);
                seq_ids.push(s as i32);
            }
            for (i, &b) in table.iter().enumerate() {
                tables[s * max_blocks + i] = i32::try_from(b)?;
            }
        }
        Ok(TokenMeta {
            tokens: positions.len(),
            block_size,
            blocks_used,
            num_seqs: seqs.len(),
            max_blocks,
            chunks: seqs.iter().map(|&(start, len, _)| (start, len)).collect(),
            positions: dev.upload(&positions)?,
            seq_ids: dev.upload(&seq_ids)?,
            block_tables: dev.upload(&tables)?,
        })
    }
}

/// Adds the q/k biases (if any) and applies rotate-half RoPE to q `[tokens, nh·d]` and
/// k `[tokens, nkv·d]` in place, at the positions of `meta`.
#[allow(clippy::too_many_arguments)]
pub fn rope_qk(
    dev: &Device,
    q: &Buffer,
    k: &Buffer,
    q_bias: Option<&Buffer>,
    k_bias: Option<&Buffer>,
    meta: &TokenMeta,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<()> {
    let kn = "rope_qk_bf16";
    ensure!(head_dim % 2 == 0 && head_dim <= 512, "{kn}: head_dim {head_dim} is odd or > 512");
    let t = meta.tokens;
    need(q, t * num_heads * head_dim * BF16, kn, "q")?;
    need(k, t * num_kv_heads * head_dim * BF16, kn, "k")?;
    if let Some(b) = q_bias {
        need(b, num_heads * head_dim * BF16, kn, "q_bias")?;
    }
    if let Some(b) = k_bias {
        need(b, num_kv_heads * head_dim * BF16, kn, "k_bias")?;
    }
    let cfg = LaunchConfig { grid: grid_1d(t, kn)?, block: Dim3::x(128), shared_bytes: 0 };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k),
        opt(q_bias),
        opt(k_bias),
        Arg::Buf(&meta.positions),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::F32(theta),
    ];
    dev.launch(kn, cfg, &args)
}

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
