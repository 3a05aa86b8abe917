//! Launchers of the training attention over packed whole sequences (kernels/attention_packed.cu,
//! the forward with the row log-sum-exp, and kernels/attention_packed_backward.cu, its
//! FlashAttention-2-style backward: delta, then dK/dV, then dQ, deterministic).
//!
//! A [`PackedPlan`] is built once per training batch from the sequence lengths (the rows of
//! sequence s are consecutive, at positions 0 .. len): it uploads `cu_seqlens` and the two work
//! lists of 64-row tiles the kernels' grids run over — query tiles (forward and dQ; most visible
//! keys first) and key tiles (dK/dV; most later queries first) — and every layer's forward and
//! backward reuse it.
use super::launch::need;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{bail, ensure, Result};

/// Threads per block of the forward, dK/dV and dQ kernels (PACKED_THREADS: 4 warps).
pub const PACKED_THREADS: u32 = 128;
/// Rows (query rows or keys) of one work item's tile (PACKED_TILE: 16 per warp).
pub const PACKED_TILE: usize = 64;
/// Head dims with a compiled kernel.
pub const PACKED_HEAD_DIMS: [usize; 2] = [64, 128];
/// Threads per block of the delta kernel (PACKED_DELTA_THREADS), and its grid cap.
const DELTA_THREADS: u32 = 256;
const DELTA_MAX_GRID: usize = 4096;

const BF16: usize = 2;
const F32: usize = 4;

/// Dynamic shared memory of the dK/dV and dQ kernels at `head_dim`: the block's own 64-row tile
/// pair, two buffers of the streamed tile pair (BC rows: 32 at D = 128, 64 at D = 64; rows of
/// D + 8 bf16) and two buffers of BC lse/delta values (kernels/attention_packed_backward.cu).
pub fn backward_smem_bytes(head_dim: usize) -> usize {
    let bc = if head_dim == 128 { 32 } else { 64 };
    (2 * PACKED_TILE + 4 * bc) * (head_dim + 8) * BF16 + 4 * bc * F32
}

/// The packing of one training batch on the device and the kernels' work lists.
pub struct PackedPlan {
    lens: Vec<usize>,
    tokens: usize,
    /// int32 `[num_seqs + 1]`: sequence s occupies rows `cu_seqlens[s] .. cu_seqlens[s + 1]`.
    pub cu_seqlens: Buffer,
    q_work: Buffer,
    q_items: usize,
    kv_work: Buffer,
    kv_items: usize,
}

impl PackedPlan {
    /// The plan of sequences of `lens` rows packed in that order (each at least one row).
    pub fn new(dev: &Device, lens: &[usize]) -> Result<Self> {
        ensure!(!lens.is_empty(), "packed attention plan: no sequences");
        if let Some(s) = lens.iter().position(|&l| l == 0) {
            bail!("packed attention plan: sequence {s} is empty");
        }
        let tokens: usize = lens.iter().sum();
        ensure!(tokens <= i32::MAX as usize, "packed attention plan: {tokens} rows exceed int32 row indices");
        let mut cu = vec![0i32];
        // (first row of the sequence, position of the tile's first row, valid rows, length)
        let mut items: Vec<[i32; 4]> = Vec::new();
        let mut start = 0usize;
        for &len in lens {
            for p0 in (0..len).step_by(PACKED_TILE) {
                items.push([start as i32, p0 as i32, (len - p0).min(PACKED_TILE) as i32, len as i32]);
            }
            start += len;
            cu.push(start as i32);
        }
        ensure!(items.len() <= 65535, "packed attention plan: {} tiles of {PACKED_TILE} rows exceed grid.y (65535)", items.len());
        // Query tiles: visible keys = position of the last row + 1. Key tiles: the queries at or
        // after the tile's first key. Longest first (stable: equal tiles keep row order).
        let mut q = items.clone();
        q.sort_by_key(|it| std::cmp::Reverse(it[1] + it[2]));
        let mut kv = items;
        kv.sort_by_key(|it| std::cmp::Reverse(it[3] - it[1]));
        Ok(PackedPlan {
            lens: lens.to_vec(),
            tokens,
            cu_seqlens: dev.upload(&cu)?,
            q_work: dev.upload(&q)?,
            q_items: q.len(),
            kv_work: dev.upload(&kv)?,
            kv_items: kv.len(),
        })
    }

    /// Rows of the batch.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The sequence lengths, in row order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Σ over rows of the keys each row sees: Σ_s len·(len + 1)/2.
    pub fn visible_pairs(&self) -> u64 {
        self.lens.iter().map(|&l| l as u64 * (l as u64 + 1) / 2).sum()
    }

    /// FLOPs of one forward: 4 · Σ_rows (visible keys) · head_dim · num_heads (Q·Kᵀ and P·V).
    pub fn flops(&self, num_heads: usize, head_dim: usize) -> u64 {
        4 * self.visible_pairs() * (head_dim * num_heads) as u64
    }

    /// FLOPs of one backward as counted for attention (FA2's convention): 2.5× the forward (dV,
    /// dP, dQ, dK and the recomputed S). The kernels execute 3.5× (S and dP are recomputed in
    /// both the dK/dV and the dQ kernel).
    pub fn backward_flops(&self, num_heads: usize, head_dim: usize) -> u64 {
        10 * self.visible_pairs() * (head_dim * num_heads) as u64
    }
}

/// The checks every packed launch shares: the head dim has a kernel, the heads divide, the grid fits.
fn check_heads(kind: &str, num_heads: usize, num_kv_heads: usize, head_dim: usize) -> Result<()> {
    ensure!(
        PACKED_HEAD_DIMS.contains(&head_dim),
        "{kind}: head_dim {head_dim} has no kernel (compiled: {PACKED_HEAD_DIMS:?})"
    );
    ensure!(
        num_kv_heads > 0 && num_heads % num_kv_heads == 0,
        "{kind}: {num_heads} heads over {num_kv_heads} KV heads"
    );
    ensure!(num_heads > 0 && num_heads <= 65535, "{kind}: {num_heads} heads (grid.x is 1..=65535)");
    Ok(())
}

/// Causal GQA attention within each packed sequence: q `[T, num_heads·head_dim]`, k and v
/// `[T, num_kv_heads·head_dim]`, out (q's shape), all bf16, and `lse` `[T, num_heads]` f32, the
/// natural log of Σ_j exp(q·k_j / √head_dim) (the backward's input).
#[allow(clippy::too_many_arguments)]
pub fn attention_packed(
    dev: &Device,
    plan: &PackedPlan,
    q: &Buffer,
    k: &Buffer,
    v: &Buffer,
    out: &Buffer,
    lse: &Buffer,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
) -> Result<()> {
    check_heads("attention_packed", num_heads, num_kv_heads, head_dim)?;
    let kn = if head_dim == 64 { "attention_packed_d64_bf16" } else { "attention_packed_d128_bf16" };
    let t = plan.tokens;
    let (qd, kvd) = (num_heads * head_dim, num_kv_heads * head_dim);
    need(q, t * qd * BF16, kn, "q")?;
    need(k, t * kvd * BF16, kn, "k")?;
    need(v, t * kvd * BF16, kn, "v")?;
    need(out, t * qd * BF16, kn, "out")?;
    need(lse, t * num_heads * F32, kn, "lse")?;
    let cfg = LaunchConfig {
        grid: Dim3::xy(num_heads as u32, plan.q_items as u32),
        block: Dim3::x(PACKED_THREADS),
        shared_bytes: 0,
    };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k),
        Arg::Buf(v),
        Arg::Buf(out),
        Arg::Buf(lse),
        Arg::Buf(&plan.q_work),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        // softmax in base 2: exp(s/√d) = 2^(s · log2(e)/√d)
        Arg::F32(std::f32::consts::LOG2_E / (head_dim as f32).sqrt()),
    ];
    dev.launch(kn, cfg, &args)
}

/// Backward of [`attention_packed`] from its inputs, its `out` and `lse`, and `dout` (out's
/// shape): `dq` (q's shape), `dk` and `dv` (k's shape) overwritten, bf16; `delta` is scratch of
/// `[T, num_heads]` f32 (rowsum(dout ∘ out), written here). Three launches on the stream: delta,
/// dK/dV (each KV head's gradient summed over its query heads by one block per key tile), dQ.
/// Deterministic: no atomics, the same bits on every run.
#[allow(clippy::too_many_arguments)]
pub fn attention_packed_backward(
    dev: &Device,
    plan: &PackedPlan,
    q: &Buffer,
    k: &Buffer,
    v: &Buffer,
    out: &Buffer,
    lse: &Buffer,
    dout: &Buffer,
    delta: &Buffer,
    dq: &Buffer,
    dk: &Buffer,
    dv: &Buffer,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
) -> Result<()> {
    check_heads("attention_packed_backward", num_heads, num_kv_heads, head_dim)?;
    let (kdkdv, kdq) = if head_dim == 64 {
        ("attention_packed_bwd_dkdv_d64_bf16", "attention_packed_bwd_dq_d64_bf16")
    } else {
        ("attention_packed_bwd_dkdv_d128_bf16", "attention_packed_bwd_dq_d128_bf16")
    };
    let kn = "attention_packed_backward";
    let t = plan.tokens;
    let (qd, kvd) = (num_heads * head_dim, num_kv_heads * head_dim);
    for (b, what) in [(q, "q"), (out, "out"), (dout, "dout"), (dq, "dq")] {
        need(b, t * qd * BF16, kn, what)?;
    }
    for (b, what) in [(k, "k"), (v, "v"), (dk, "dk"), (dv, "dv")] {
        need(b, t * kvd * BF16, kn, what)?;
    }
    need(lse, t * num_heads * F32, kn, "lse")?;
    need(delta, t * num_heads * F32, kn, "delta")?;

    let pairs = t * num_heads;
    let cfg = LaunchConfig {
        grid: Dim3::x(pairs.div_ceil((DELTA_THREADS / 32) as usize).clamp(1, DELTA_MAX_GRID) as u32),
        block: Dim3::x(DELTA_THREADS),
        shared_bytes: 0,
    };
    let args = [Arg::Buf(out), Arg::Buf(dout), Arg::Buf(delta), Arg::I64(pairs as i64), Arg::I32(head_dim as i32)];
    dev.launch("attention_packed_bwd_delta_bf16", cfg, &args)?;

    let smem = backward_smem_bytes(head_dim);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let scale_log2 = std::f32::consts::LOG2_E * scale;
    let cfg = LaunchConfig {
        grid: Dim3::xy(num_kv_heads as u32, plan.kv_items as u32),
        block: Dim3::x(PACKED_THREADS),
        shared_bytes: smem,
    };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k),
        Arg::Buf(v),
        Arg::Buf(dout),
        Arg::Buf(lse),
        Arg::Buf(delta),
        Arg::Buf(dk),
        Arg::Buf(dv),
        Arg::Buf(&plan.kv_work),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::F32(scale_log2),
        Arg::F32(scale),
    ];
    dev.launch(kdkdv, cfg, &args)?;

    let cfg = LaunchConfig {
        grid: Dim3::xy(num_heads as u32, plan.q_items as u32),
        block: Dim3::x(PACKED_THREADS),
        shared_bytes: smem,
    };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k),
        Arg::Buf(v),
        Arg::Buf(dout),
        Arg::Buf(lse),
        Arg::Buf(delta),
        Arg::Buf(dq),
        Arg::Buf(&plan.q_work),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::F32(scale_log2),
        Arg::F32(scale),
    ];
    dev.launch(kdq, cfg, &args)
}
