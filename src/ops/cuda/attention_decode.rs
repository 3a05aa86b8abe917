//! Launcher of the split-KV decode attention (kernels/attention_decode.cu): one query token per
//! sequence over its paged context, the query heads of a KV head sharing each K/V load.
//!
//! [`DecodePlan::new`] is built once per forward from the batch's `TokenMeta`: it checks that the
//! batch is decode-shaped, picks the number of KV splits and owns the f32 partials every layer's
//! [`decode_attention`] call reuses (the layers run one after another on one stream).
//! [`DecodePlan::for_leading`] covers only the batch's first sequences, each with one new token,
//! when prefill chunks follow them (continuous batching): their token rows are then rows 0..n,
//! so the kernels index them by sequence as in a pure decode batch, and the prefill kernel takes
//! the remaining chunks.
use super::kv_cache_write::check_cache;
use super::launch::{need, opt};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{bail, ensure, Result};

/// Head dims with a compiled split kernel.
pub const DECODE_HEAD_DIMS: [usize; 2] = [64, 128];
/// Query heads per KV head one block serves (the 16 rows of the mma tile).
pub const DECODE_MAX_GROUP: usize = 16;
/// Threads of the split kernel (DEC_THREADS: 4 warps).
const SPLIT_THREADS: u32 = 128;
/// Keys the 4 warps take per round (4 x 16): split lengths are multiples of it.
const KEY_ROUND: usize = 64;
/// SMs of an H100/H200 SXM: what interpret mode plans for (`Device::sm_count`), so its tests
/// see the target GPU's grids; on a GPU the plan fills that GPU's own SMs.
pub const H100_SMS: usize = 132;
/// Blocks per SM the split grid aims for: about 2 waves of 2 resident blocks on each SM, so the
/// last wave's imbalance stays small.
const BLOCKS_PER_SM: usize = 2 * 2;
/// Fewest keys per split (context allowing): 4 tiles per warp, so the double buffer overlaps
/// loads with compute and the per-split fixed cost (page staging, merge, partial) stays small.
const MIN_KEYS_PER_SPLIT: usize = 256;
/// Page indices a block stages in shared memory (16 KB); bounds keys per split by block size.
const MAX_STAGED_PAGES: usize = 4096;

const BF16: usize = 2;
const F32: usize = 4;

/// The split grid of one decode batch and its workspace.
pub struct DecodePlan {
    /// Sequences attended: the batch's first `num_seqs`, of its `batch_seqs`.
    pub num_seqs: usize,
    pub batch_seqs: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_splits: usize,
    /// Keys of split z: `[z * keys_per_split, (z + 1) * keys_per_split)` of every sequence.
    pub keys_per_split: usize,
    /// f32 `[num_seqs, num_heads, num_splits, head_dim]`: each split's normalised output.
    pub o_part: Buffer,
    /// f32 `[num_seqs, num_heads, num_splits]`: each split's log-sum-exp, in log2 units.
    pub lse_part: Buffer,
}

impl DecodePlan {
    /// The heuristic ([`split_plan`] for the device's SMs; interpret mode plans for an H100's
    /// 132, the numbers below): enough splits for ~528 blocks over the (sequence, KV head)
    /// pairs, each split at least `MIN_KEYS_PER_SPLIT` (256) keys of the longest context, and no
    /// more keys per split than the staged page list covers. E.g. for 2 KV heads at 24K context:
    /// batch 1 → 96 splits of 256 keys, batch 32 → 9 of 2752, batch 128 → 3 of 8192.
    pub fn new(dev: &Device, meta: &TokenMeta, num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<Self> {
        Self::for_leading(dev, meta, meta.num_seqs, num_heads, num_kv_heads, head_dim)
    }

    /// The plan of the batch's first `seqs` sequences, which must bring one new token each
    /// (the rest of the batch, if any, is left to the prefill kernel).
    pub fn for_leading(
        dev: &Device,
        meta: &TokenMeta,
        seqs: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let max_ctx = decode_shape(meta, seqs, num_heads, num_kv_heads, head_dim)?;
        let (splits, keys) = split_plan(seqs, num_kv_heads, max_ctx, meta.block_size, dev.sm_count());
        Self::build(dev, meta, seqs, num_heads, num_kv_heads, head_dim, splits, keys)
    }

    /// A plan with exactly `num_splits` splits of the longest context (rounded up to 64 keys, so
    /// the last ones may hold no keys at all): for tests, and for a grid that must not change
    /// while contexts grow (CUDA graphs: build it for the longest context the graph will see).
    pub fn with_splits(
        dev: &Device,
        meta: &TokenMeta,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_splits: usize,
    ) -> Result<Self> {
        let max_ctx = decode_shape(meta, meta.num_seqs, num_heads, num_kv_heads, head_dim)?;
        ensure!(num_splits > 0, "attention_decode: 0 KV splits");
        let keys = max_ctx.div_ceil(num_splits).next_multiple_of(KEY_ROUND);
        let most = max_keys_per_split(meta.block_size);
        ensure!(
            keys <= most,
            "attention_decode: {num_splits} splits of a {max_ctx}-key context give {keys} keys per split; \
             block size {} allows at most {most} (the staged page list)",
            meta.block_size
        );
        Self::build(dev, meta, meta.num_seqs, num_heads, num_kv_heads, head_dim, num_splits, keys)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        dev: &Device,
        meta: &TokenMeta,
        seqs: usize,
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        num_splits: usize,
        keys_per_split: usize,
    ) -> Result<Self> {
        ensure!(num_splits <= 65535, "attention_decode: {num_splits} splits exceed grid.z");
        let partials = seqs * num_heads * num_splits;
        Ok(DecodePlan {
            num_seqs: seqs,
            batch_seqs: meta.num_seqs,
            num_heads,
            num_kv_heads,
            head_dim,
            block_size: meta.block_size,
            num_splits,
            keys_per_split,
            o_part: dev.alloc(partials * head_dim * F32)?,
            lse_part: dev.alloc(partials * F32)?,
        })
    }

    /// Pages one split may touch: its keys can start anywhere in a page.
    fn staged_pages(&self) -> usize {
        (self.keys_per_split - 1) / self.block_size + 2
    }
}

/// The split heuristic: `(num_splits, keys_per_split)` for `seqs` sequences over `num_kv_heads`
/// KV heads whose longest context is `max_ctx` keys, on a GPU of `sms` SMs. Small batches fill
/// the GPU: when sequences x KV heads are fewer than the ~4 blocks per SM the grid aims for,
/// each (sequence, KV head) pair is cut into more splits, but no split gets fewer than
/// `MIN_KEYS_PER_SPLIT` (256) keys of the longest context (its fixed cost: page staging,
/// partials, the combine) nor more keys than a block stages pages for. Keys per split are a
/// multiple of 64 and every split of the longest context holds keys
/// (`(num_splits - 1) * keys_per_split < max_ctx`). Pure, so tests check it for any GPU.
pub fn split_plan(seqs: usize, num_kv_heads: usize, max_ctx: usize, block_size: usize, sms: usize) -> (usize, usize) {
    let want = (BLOCKS_PER_SM * sms).div_ceil((seqs * num_kv_heads).max(1));
    let splits = want.min(max_ctx.div_ceil(MIN_KEYS_PER_SPLIT)).max(1);
    let keys = max_ctx.div_ceil(splits).next_multiple_of(KEY_ROUND).min(max_keys_per_split(block_size));
    (max_ctx.div_ceil(keys), keys)
}

/// Largest multiple of `KEY_ROUND` whose pages fit the staging list: `(c - 1) / bs + 2 <= MAX`.
fn max_keys_per_split(block_size: usize) -> usize {
    (MAX_STAGED_PAGES - 1) * block_size / KEY_ROUND * KEY_ROUND
}

/// Checks the heads and the batch's first `seqs` sequences (each contributes exactly one token,
/// so sequence s is token row s); returns their longest context.
fn decode_shape(meta: &TokenMeta, seqs: usize, num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<usize> {
    let kn = "attention_decode";
    ensure!(DECODE_HEAD_DIMS.contains(&head_dim), "{kn}: head_dim {head_dim} is not compiled (one of {DECODE_HEAD_DIMS:?})");
    ensure!(
        num_kv_heads > 0 && num_heads % num_kv_heads == 0 && num_heads / num_kv_heads <= DECODE_MAX_GROUP,
        "{kn}: {num_heads} query heads over {num_kv_heads} KV heads (a group of 1..={DECODE_MAX_GROUP} per KV head)"
    );
    ensure!(num_heads <= 65535, "{kn}: {num_heads} heads exceed grid.y");
    ensure!(
        seqs > 0 && seqs <= meta.num_seqs && seqs <= i32::MAX as usize,
        "{kn}: {seqs} sequences of a batch of {}",
        meta.num_seqs
    );
    let lead = &meta.chunks[..seqs];
    if let Some((s, &(start, len))) = lead.iter().enumerate().find(|(_, c)| c.1 != 1) {
        bail!("{kn}: sequence {s} has {len} new tokens at position {start}; decode takes exactly 1 per sequence");
    }
    Ok(lead.iter().map(|&(start, _)| start + 1).max().unwrap_or(1))
}

/// `out` `[num_seqs, num_heads * head_dim]` bf16 = attention of q (same shape, one token per
/// sequence, after RoPE, its own K/V already in the cache) over each sequence's context in
/// the paged cache; `lse` (f32 `[num_seqs, num_heads]`, natural log) if given.
#[allow(clippy::too_many_arguments)]
pub fn decode_attention(
    dev: &Device,
    plan: &DecodePlan,
    q: &Buffer,
    k_cache: &Buffer,
    v_cache: &Buffer,
    out: &Buffer,
    lse: Option<&Buffer>,
    meta: &TokenMeta,
    num_blocks: usize,
) -> Result<()> {
    let kn = "attention_decode";
    let (seqs, nh, nkv, d) = (plan.num_seqs, plan.num_heads, plan.num_kv_heads, plan.head_dim);
    let max_ctx = decode_shape(meta, seqs, nh, nkv, d)?;
    ensure!(
        meta.num_seqs == plan.batch_seqs && meta.block_size == plan.block_size,
        "{kn}: the plan is for a batch of {} sequences in blocks of {}, the batch has {} in blocks of {}",
        plan.batch_seqs,
        plan.block_size,
        meta.num_seqs,
        meta.block_size
    );
    let covered = plan.num_splits * plan.keys_per_split;
    ensure!(max_ctx <= covered, "{kn}: a {max_ctx}-key context exceeds the plan's {covered} keys (rebuild the plan)");
    need(q, seqs * nh * d * BF16, kn, "q")?;
    need(out, seqs * nh * d * BF16, kn, "out")?;
    if let Some(l) = lse {
        need(l, seqs * nh * F32, kn, "lse")?;
    }
    check_cache(k_cache, meta, num_blocks, nkv * d, kn, "k_cache")?;
    check_cache(v_cache, meta, num_blocks, nkv * d, kn, "v_cache")?;

    let pages = plan.staged_pages();
    let split_cfg = LaunchConfig {
        grid: Dim3 { x: seqs as u32, y: nkv as u32, z: plan.num_splits as u32 },
        block: Dim3::x(SPLIT_THREADS),
        // Two 16-key K and V stages per warp, then the page list.
        shared_bytes: 4 * 2 * 2 * 16 * d * BF16 + pages * 4,
    };
    let scale_log2 = std::f32::consts::LOG2_E / (d as f32).sqrt();
    dev.launch(
        if d == 64 { "attention_decode_split_bf16_d64" } else { "attention_decode_split_bf16_d128" },
        split_cfg,
        &[
            Arg::Buf(q),
            Arg::Buf(k_cache),
            Arg::Buf(v_cache),
            Arg::Buf(&plan.o_part),
            Arg::Buf(&plan.lse_part),
            Arg::Buf(&meta.positions),
            Arg::Buf(&meta.block_tables),
            Arg::I32(meta.max_blocks as i32),
            Arg::I32(meta.block_size as i32),
            Arg::I32(nh as i32),
            Arg::I32(nkv as i32),
            Arg::I32(plan.keys_per_split as i32),
            Arg::I32(pages as i32),
            Arg::F32(scale_log2),
        ],
    )?;
    let combine_cfg = LaunchConfig { grid: Dim3::xy(seqs as u32, nh as u32), block: Dim3::x(d as u32), shared_bytes: 0 };
    dev.launch(
        "attention_decode_combine",
        combine_cfg,
        &[
            Arg::Buf(&plan.o_part),
            Arg::Buf(&plan.lse_part),
            Arg::Buf(&meta.positions),
            Arg::Buf(out),
            opt(lse),
            Arg::I32(nh as i32),
            Arg::I32(d as i32),
            Arg::I32(plan.num_splits as i32),
            Arg::I32(plan.keys_per_split as i32),
        ],
    )
}
