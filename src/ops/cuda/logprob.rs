//! Launcher of the fused lm_head log-prob and entropy (kernels/logprob.cu; CPU reference
//! src/ops/cpu/logprob.rs): the forward (per-row log-prob of the target at a temperature,
//! entropy, and the lse and mean logit the backward reuses) and the backward (d hidden, d
//! lm_head), on tensor cores, one vocabulary chunk at a time, never the `[rows × vocab]` logits.
//!
//! The chunk plan ([`LogProbPlan`]): `LogProbShape::chunk` columns rounded up to a multiple of
//! the 128-column tile (at most the vocabulary, rounded up). The forward runs every chunk at once
//! (one block per 128 rows and chunk) and merges their partial statistics in chunk order; the
//! backward runs the chunks one after the other, three launches each (dlogits → dweight →
//! dhidden) through one `[rows × chunk]` bf16 buffer. Results are bit-identical from run to run
//! for a given plan (no atomics; fixed reduction orders); a different chunk size changes the
//! f32 summation order, nothing else. The forward is batch-invariant: a row's results depend on
//! its hidden state, the lm_head and the chunk size, not on the other rows or its position, so
//! the old-policy and current log-probs of a token agree bit for bit under the same weights.
//! That is why the forward's split is the caller's chunk and not chosen from the row count (few
//! rows with chunks of 8192 under-fill a large GPU: 1K rows are 8 x 19 = 152 blocks; pass a
//! smaller chunk there).
//!
//! Dtypes: hidden rows and the lm_head bf16; log-probs, entropies, lse, mean logits f32;
//! d_logp, d_entropy f32; dx (the gradient of the scored rows) f32 `[rows, hidden]`, overwritten;
//! d_lm_head f32 `[vocab, hidden]`, accumulated (+=). `Ops::logprobs_backward` on the CUDA backend
//! scatters dx into the bf16 d_hidden of the whole packed batch.
//!
//! Registers and shared memory (ptxas of nvcc 13.0, sm_80 / sm_90a; no spills, no stack; the
//! GEMM kernels are capped at 128 registers by `__launch_bounds__(256, 2)`: two blocks of 8 warps
//! per SM, 131 KB of smem with the forward's):
//!   logprob_fwd_partials_bf16  128 / 128 registers, 61,440 B dynamic + 4,096 B static smem
//!   logprob_dlogits_bf16       125 / 124,          61,440 B dynamic
//!   logprob_dweight_bf16       120 / 124,          52,224 B dynamic
//!   logprob_dhidden_bf16       121 / 122,          56,832 B dynamic
//!   logprob_combine             31 / 31;  logprob_scatter_rows_bf16 24 / 24
//! (the build's full report: OUT_DIR/ptxas.txt; `device::fatbin`'s test fails on any spill).
use super::embedding::embedding_gather;
use super::launch::{need, need_t, opt, BF16};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use crate::ops::{LogProbShape, TokenLogProbs};
use anyhow::{bail, ensure, Result};

/// Threads per block of the GEMM kernels (LP_THREADS: 8 warps).
pub const LOGPROB_THREADS: u32 = 256;
/// Rows and vocabulary columns of one output tile (LP_BM = LP_BN); chunks are multiples of it.
pub const LOGPROB_TILE: usize = 128;
const BK: usize = 32;
const STAGES: usize = 3;
const PAD: usize = 8;
const F32: usize = 4;

/// Dynamic shared memory of the GEMM mainloop (kernels/logprob.cu `Gemm<A_K, B_K>::SMEM_BYTES`):
/// 3 stages of an A and a B tile, each `[128][32 + 8]` (K-contiguous) or `[32][128 + 8]` bf16.
const fn gemm_smem(a_k: bool, b_k: bool) -> usize {
    const fn tile(k: bool) -> usize {
        if k {
            LOGPROB_TILE * (BK + PAD)
        } else {
            BK * (LOGPROB_TILE + PAD)
        }
    }
    STAGES * (tile(a_k) + tile(b_k)) * BF16
}
/// The logits kernels (forward and dlogits): x and W both K-contiguous.
pub const LOGITS_SMEM: usize = gemm_smem(true, true);
/// dweight: dzᵀ and x, both M/N-contiguous.
pub const DWEIGHT_SMEM: usize = gemm_smem(false, false);
/// dhidden: dz K-contiguous, W N-contiguous.
pub const DHIDDEN_SMEM: usize = gemm_smem(true, false);

/// The vocabulary chunking of one call of `rows` rows (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogProbPlan {
    pub rows: usize,
    pub hidden: usize,
    pub vocab: usize,
    pub temperature: f32,
    /// Columns per chunk: a multiple of [`LOGPROB_TILE`]; the last chunk holds the rest.
    pub chunk: usize,
    pub chunks: usize,
}

impl LogProbPlan {
    /// The plan for `rows` rows of `sh`; refuses what the kernels cannot take (hidden not a
    /// multiple of 8, a temperature that is not positive, sizes past int32).
    pub fn new(rows: usize, sh: LogProbShape) -> Result<Self> {
        let (h, v) = (sh.hidden, sh.vocab);
        ensure!(h > 0 && h % 8 == 0, "logprob: hidden {h} must be a positive multiple of 8 (16-byte rows for cp.async)");
        ensure!(v > 0, "logprob: an empty vocabulary");
        ensure!(sh.temperature.is_finite() && sh.temperature > 0.0, "logprob: temperature {} must be positive", sh.temperature);
        let limit = i32::MAX as usize;
        ensure!(rows <= limit && h <= limit && v <= limit, "logprob: {rows} rows x hidden {h} x vocab {v} exceed int32 indices");
        let full = v.div_ceil(LOGPROB_TILE) * LOGPROB_TILE;
        let chunk = (sh.chunk.max(1).div_ceil(LOGPROB_TILE) * LOGPROB_TILE).min(full);
        let chunks = v.div_ceil(chunk);
        ensure!(chunks <= 65535, "logprob: {chunks} vocabulary chunks exceed grid.y (use a larger chunk)");
        ensure!(rows.div_ceil(LOGPROB_TILE) <= limit, "logprob: {rows} rows exceed grid.x");
        Ok(LogProbPlan { rows, hidden: h, vocab: v, temperature: sh.temperature, chunk, chunks })
    }

    /// Columns `[c0, c1)` of chunk `c`.
    pub fn chunk_range(&self, c: usize) -> (usize, usize) {
        (c * self.chunk, ((c + 1) * self.chunk).min(self.vocab))
    }

    /// Bytes of the forward's partial statistics (float4 per chunk and row).
    pub fn partials_bytes(&self) -> usize {
        self.chunks * self.rows * 16
    }

    /// Bytes of the backward's `[rows × chunk]` bf16 buffer of ∂L/∂logits.
    pub fn dz_bytes(&self) -> usize {
        self.rows * self.chunk * BF16
    }

    /// FLOPs of the forward's lm_head product: 2·rows·vocab·hidden.
    pub fn forward_flops(&self) -> u64 {
        2 * (self.rows * self.vocab * self.hidden) as u64
    }

    /// FLOPs of the backward's two gradient products (d hidden, d lm_head): 4·rows·vocab·hidden.
    /// The kernels also recompute the logits (another 2·rows·vocab·hidden).
    pub fn backward_flops(&self) -> u64 {
        2 * self.forward_flops()
    }

    fn row_tiles(&self) -> u32 {
        self.rows.div_ceil(LOGPROB_TILE) as u32
    }
}

/// The forward's per-row results, f32 `[rows]` each.
pub struct LogProbOut<'a> {
    pub logp: &'a Buffer,
    pub entropy: &'a Buffer,
    pub lse: &'a Buffer,
    pub mean_z: &'a Buffer,
}

/// Forward: from x `[rows, hidden]` bf16, the lm_head `[vocab, hidden]` bf16 and targets
/// `[rows]` int32 (each < vocab), the per-row results into `out`. `partials`
/// (`plan.partials_bytes()`) and `target_u` (f32 `[rows]`) are scratch.
#[allow(clippy::too_many_arguments)]
pub fn logprob_forward(
    dev: &Device,
    plan: &LogProbPlan,
    x: &Buffer,
    lm_head: &Buffer,
    targets: &Buffer,
    partials: &Buffer,
    target_u: &Buffer,
    out: &LogProbOut,
) -> Result<()> {
    let k = "logprob_fwd_partials_bf16";
    let (t, h, v) = (plan.rows, plan.hidden, plan.vocab);
    need_t(x, t * h, DType::Bf16, k, "x")?;
    need_t(lm_head, v * h, DType::Bf16, k, "lm_head")?;
    need(targets, t * 4, k, "targets")?;
    need_t(partials, plan.partials_bytes() / F32, DType::F32, k, "partials")?;
    need_t(target_u, t, DType::F32, k, "target_u")?;
    for (b, what) in [(out.logp, "logp"), (out.entropy, "entropy"), (out.lse, "lse"), (out.mean_z, "mean_z")] {
        need_t(b, t, DType::F32, "logprob_combine", what)?;
    }
    if t == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid: Dim3::xy(plan.row_tiles(), plan.chunks as u32), block: Dim3::x(LOGPROB_THREADS), shared_bytes: LOGITS_SMEM };
    dev.launch(
        k,
        cfg,
        &[
            Arg::Buf(x),
            Arg::Buf(lm_head),
            Arg::Buf(targets),
            Arg::I32(t as i32),
            Arg::I32(h as i32),
            Arg::I32(v as i32),
            Arg::I32(plan.chunk as i32),
            Arg::F32(std::f32::consts::LOG2_E / plan.temperature),
            Arg::Buf(partials),
            Arg::Buf(target_u),
        ],
    )?;
    let cfg = LaunchConfig { grid: Dim3::x(t.div_ceil(256) as u32), block: Dim3::x(256), shared_bytes: 0 };
    dev.launch(
        "logprob_combine",
        cfg,
        &[
            Arg::Buf(partials),
            Arg::Buf(target_u),
            Arg::I32(t as i32),
            Arg::I32(plan.chunks as i32),
            Arg::Buf(out.logp),
            Arg::Buf(out.entropy),
            Arg::Buf(out.lse),
            Arg::Buf(out.mean_z),
        ],
    )
}

/// Backward: with the forward's `lse` and `mean_z` and the upstream gradients `d_logp` (and
/// `d_entropy`, if the loss has an entropy term), all f32 `[rows]`: `dx` (f32 `[rows, hidden]`)
/// overwritten with ∂L/∂x, and ∂L/∂lm_head added to `d_lm_head` (f32 `[vocab, hidden]`).
/// `dz` (`plan.dz_bytes()`) is scratch.
#[allow(clippy::too_many_arguments)]
pub fn logprob_backward(
    dev: &Device,
    plan: &LogProbPlan,
    x: &Buffer,
    lm_head: &Buffer,
    targets: &Buffer,
    lse: &Buffer,
    mean_z: &Buffer,
    d_logp: &Buffer,
    d_entropy: Option<&Buffer>,
    dz: &Buffer,
    dx: &Buffer,
    d_lm_head: &Buffer,
) -> Result<()> {
    let k = "logprob_backward";
    let (t, h, v) = (plan.rows, plan.hidden, plan.vocab);
    need_t(x, t * h, DType::Bf16, k, "x")?;
    need_t(lm_head, v * h, DType::Bf16, k, "lm_head")?;
    need(targets, t * 4, k, "targets")?;
    for (b, what) in [(lse, "lse"), (mean_z, "mean_z"), (d_logp, "d_logp")] {
        need_t(b, t, DType::F32, k, what)?;
    }
    if let Some(e) = d_entropy {
        need_t(e, t, DType::F32, k, "d_entropy")?;
    }
    need_t(dz, plan.dz_bytes() / BF16, DType::Bf16, k, "dz")?;
    need_t(dx, t * h, DType::F32, k, "dx")?;
    need_t(d_lm_head, v * h, DType::F32, k, "d_lm_head")?;
    if t == 0 {
        return Ok(());
    }
    let block = Dim3::x(LOGPROB_THREADS);
    let h_tiles = h.div_ceil(LOGPROB_TILE) as u32;
    for c in 0..plan.chunks {
        let (c0, c1) = plan.chunk_range(c);
        let width = c1 - c0;
        let col_tiles = width.div_ceil(LOGPROB_TILE) as u32;
        dev.launch(
            "logprob_dlogits_bf16",
            LaunchConfig { grid: Dim3::xy(plan.row_tiles(), col_tiles), block, shared_bytes: LOGITS_SMEM },
            &[
                Arg::Buf(x),
                Arg::Buf(lm_head),
                Arg::Buf(targets),
                Arg::I32(t as i32),
                Arg::I32(h as i32),
                Arg::I32(v as i32),
                Arg::I32(c0 as i32),
                Arg::I32(plan.chunk as i32),
                Arg::F32(1.0 / plan.temperature),
                Arg::Buf(lse),
                Arg::Buf(mean_z),
                Arg::Buf(d_logp),
                opt(d_entropy),
                Arg::Buf(dz),
            ],
        )?;
        dev.launch(
            "logprob_dweight_bf16",
            LaunchConfig { grid: Dim3::xy(col_tiles, h_tiles), block, shared_bytes: DWEIGHT_SMEM },
            &[
                Arg::Buf(dz),
                Arg::Buf(x),
                Arg::I32(t as i32),
                Arg::I32(h as i32),
                Arg::I32(plan.chunk as i32),
                Arg::I32(width as i32),
                Arg::BufAt(d_lm_head, c0 * h * F32),
            ],
        )?;
        dev.launch(
            "logprob_dhidden_bf16",
            LaunchConfig { grid: Dim3::xy(plan.row_tiles(), h_tiles), block, shared_bytes: DHIDDEN_SMEM },
            &[
                Arg::Buf(dz),
                Arg::BufAt(lm_head, c0 * h * BF16),
                Arg::I32(t as i32),
                Arg::I32(h as i32),
                Arg::I32(plan.chunk as i32),
                Arg::I32(width as i32),
                Arg::Buf(dx),
                Arg::I32((c > 0) as i32),
            ],
        )?;
    }
    Ok(())
}

/// `d_hidden[rows[r]] = bf16(dx[r])` for the `n` rows of dx (f32 `[n, hidden]`); `rows` int32,
/// distinct, each < `total_rows` (the rows of d_hidden, bf16 `[total_rows, hidden]`; its other
/// rows are left alone).
pub fn logprob_scatter_rows(dev: &Device, dx: &Buffer, rows: &Buffer, n: usize, hidden: usize, d_hidden: &Buffer, total_rows: usize) -> Result<()> {
    let k = "logprob_scatter_rows_bf16";
    ensure!(hidden % 2 == 0, "{k}: hidden {hidden} must be even");
    need_t(dx, n * hidden, DType::F32, k, "dx")?;
    need(rows, n * 4, k, "rows")?;
    need_t(d_hidden, total_rows * hidden, DType::Bf16, k, "d_hidden")?;
    ensure!(total_rows <= i32::MAX as usize, "{k}: {total_rows} rows exceed int32");
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig { grid: Dim3::x(u32::try_from(n)?), block: Dim3::x(256), shared_bytes: 0 };
    dev.launch(
        k,
        cfg,
        &[Arg::Buf(dx), Arg::Buf(rows), Arg::I32(n as i32), Arg::I32(hidden as i32), Arg::I32(total_rows as i32), Arg::Buf(d_hidden)],
    )
}

// ---- the Ops adapters (CudaOps::logprobs / logprobs_backward) --------------------------------

/// The rows of `hidden` (bf16 `[*, h]`) at `rows`, compacted into a new `[rows.len(), h]` buffer,
/// and the uploaded row ids. Refuses a row past the buffer (and, with `distinct`, a repeated row).
fn gather(dev: &Device, hidden: &Buffer, rows: &[usize], h: usize, distinct: bool) -> Result<(Buffer, Buffer, usize)> {
    let avail = hidden.len_bytes() / (BF16 * h);
    let mut seen = vec![false; if distinct { avail } else { 0 }];
    let ids = rows
        .iter()
        .map(|&r| {
            if r >= avail {
                bail!("logprob: row {r} of {avail} hidden rows");
            }
            if distinct {
                if seen[r] {
                    bail!("logprob: row {r} is scored twice (the backward writes each row of d_hidden once)");
                }
                seen[r] = true;
            }
            Ok(r as i32)
        })
        .collect::<Result<Vec<i32>>>()?;
    let ids = dev.upload(&ids)?;
    let x = dev.alloc(rows.len() * h * BF16)?.typed(DType::Bf16);
    embedding_gather(dev, &ids, hidden, &x, rows.len(), h, avail)?;
    Ok((x, ids, avail))
}

fn upload_targets(dev: &Device, targets: &[u32], vocab: usize) -> Result<Buffer> {
    let t = targets
        .iter()
        .map(|&y| if (y as usize) < vocab { Ok(y as i32) } else { bail!("logprob: target {y} is outside the vocabulary ({vocab})") })
        .collect::<Result<Vec<i32>>>()?;
    dev.upload(&t)
}

/// `Ops::logprobs` on the device: gather the rows, the forward, the four results to the host.
pub fn ops_logprobs(dev: &Device, hidden: &Buffer, rows: &[usize], targets: &[u32], lm_head: &Buffer, sh: LogProbShape) -> Result<TokenLogProbs> {
    ensure!(rows.len() == targets.len(), "logprobs: {} rows with {} targets", rows.len(), targets.len());
    let plan = LogProbPlan::new(rows.len(), sh)?;
    let t = rows.len();
    if t == 0 {
        return Ok(TokenLogProbs { logp: vec![], entropy: vec![], lse: vec![], mean_z: vec![] });
    }
    let (x, _, _) = gather(dev, hidden, rows, sh.hidden, false)?;
    let y = upload_targets(dev, targets, sh.vocab)?;
    let f32s = |n: usize| -> Result<Buffer> { Ok(dev.alloc(n * F32)?.typed(DType::F32)) };
    let (partials, target_u) = (f32s(plan.partials_bytes() / F32)?, f32s(t)?);
    let outs: Vec<Buffer> = (0..4).map(|_| f32s(t)).collect::<Result<_>>()?;
    let out = LogProbOut { logp: &outs[0], entropy: &outs[1], lse: &outs[2], mean_z: &outs[3] };
    logprob_forward(dev, &plan, &x, lm_head, &y, &partials, &target_u, &out)?;
    let get = |b: &Buffer| -> Result<Vec<f32>> {
        let mut v: Vec<f32> = dev.download(b)?;
        v.truncate(t);
        Ok(v)
    };
    Ok(TokenLogProbs { logp: get(&outs[0])?, entropy: get(&outs[1])?, lse: get(&outs[2])?, mean_z: get(&outs[3])? })
}

/// `Ops::logprobs_backward` on the device. `d_lm_head` must be an f32 `[vocab, hidden]` buffer
/// (the lm_head's view of an f32 gradient set: the gradient accumulates in f32); `d_hidden` (bf16,
/// `hidden`'s shape) is overwritten: zero, then each scored row.
#[allow(clippy::too_many_arguments)]
pub fn ops_logprobs_backward(
    dev: &Device,
    hidden: &Buffer,
    rows: &[usize],
    targets: &[u32],
    lm_head: &Buffer,
    fwd: &TokenLogProbs,
    d_logp: &[f32],
    d_entropy: Option<&[f32]>,
    sh: LogProbShape,
    d_hidden: &Buffer,
    d_lm_head: &Buffer,
) -> Result<()> {
    let t = rows.len();
    ensure!(targets.len() == t, "logprobs_backward: {t} rows with {} targets", targets.len());
    for (what, len) in [("fwd.lse", fwd.lse.len()), ("fwd.mean_z", fwd.mean_z.len()), ("d_logp", d_logp.len())] {
        ensure!(len == t, "logprobs_backward: {what} has {len} entries for {t} rows");
    }
    if let Some(e) = d_entropy {
        ensure!(e.len() == t, "logprobs_backward: d_entropy has {} entries for {t} rows", e.len());
    }
    let (h, v) = (sh.hidden, sh.vocab);
    if d_lm_head.dtype() == Some(DType::Bf16) || d_lm_head.len_bytes() != v * h * F32 {
        bail!(
            "logprobs_backward: d_lm_head holds {} bytes{}; the lm_head gradient accumulates in f32 ([{v}, {h}] = {} bytes): \
             pass the lm_head's view of an f32 gradient set (`zeros_params`), not a bf16 weight",
            d_lm_head.len_bytes(),
            d_lm_head.dtype().map_or(String::new(), |d| format!(" of {d}")),
            v * h * F32
        );
    }
    ensure!(
        d_hidden.len_bytes() >= hidden.len_bytes(),
        "logprobs_backward: d_hidden holds {} bytes, hidden {}",
        d_hidden.len_bytes(),
        hidden.len_bytes()
    );
    let plan = LogProbPlan::new(t, sh)?;
    dev.zero(d_hidden)?;
    if t == 0 {
        return Ok(());
    }
    let (x, ids, total_rows) = gather(dev, hidden, rows, h, true)?;
    let y = upload_targets(dev, targets, v)?;
    let up = |v: &[f32]| -> Result<Buffer> { Ok(dev.upload(v)?.typed(DType::F32)) };
    let (lse, mean_z, dl) = (up(&fwd.lse)?, up(&fwd.mean_z)?, up(d_logp)?);
    let de = d_entropy.map(up).transpose()?;
    let (dz, dx) = (dev.alloc(plan.dz_bytes())?.typed(DType::Bf16), dev.alloc(t * h * F32)?.typed(DType::F32));
    logprob_backward(dev, &plan, &x, lm_head, &y, &lse, &mean_z, &dl, de.as_ref(), &dz, &dx, d_lm_head)?;
    logprob_scatter_rows(dev, &dx, &ids, t, h, d_hidden, total_rows)
}
