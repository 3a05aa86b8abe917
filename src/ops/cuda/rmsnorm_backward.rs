//! Launcher of kernels/rmsnorm_backward.cu (CPU reference: src/ops/cpu/norm.rs
//! `rmsnorm_backward`).
use super::colsum::{colsum_acc, rows_per_group};
use super::launch::{need_t, grid_1d};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// Columns each thread owns (RMSB_COLS in the kernel).
const COLS_PER_THREAD: usize = 8;

/// Backward of `out = rmsnorm(x) · w` over `rows` rows of `hidden`: `dx` (bf16) overwritten,
/// `dw` (f32) accumulated by a deterministic two-stage reduction. x, w, dy are bf16.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dev: &Device,
    x: &Buffer,
    w: &Buffer,
    dy: &Buffer,
    dx: &Buffer,
    dw: &Buffer,
    rows: usize,
    hidden: usize,
    eps: f32,
) -> Result<()> {
    let k = "rmsnorm_backward_bf16";
    ensure!(hidden > 0 && hidden <= 1024 * COLS_PER_THREAD, "{k}: hidden {hidden} is 0 or > {}", 1024 * COLS_PER_THREAD);
    for (b, what) in [(x, "x"), (dy, "dy"), (dx, "dx")] {
        need_t(b, rows * hidden, DType::Bf16, k, what)?;
    }
    need_t(w, hidden, DType::Bf16, k, "w")?;
    need_t(dw, hidden, DType::F32, k, "dw")?;
    if rows == 0 {
        return Ok(());
    }
    ensure!(rows <= i32::MAX as usize, "{k}: {rows} rows");
    let rpb = rows_per_group(rows);
    let blocks = rows.div_ceil(rpb);
    let threads = hidden.div_ceil(COLS_PER_THREAD).next_multiple_of(32);
    let partial = dev.alloc(blocks * hidden * 4)?;
    let cfg = LaunchConfig { grid: grid_1d(blocks, k)?, block: Dim3::x(threads as u32), shared_bytes: 0 };
    let args = [
        Arg::Buf(x),
        Arg::Buf(w),
        Arg::Buf(dy),
        Arg::Buf(dx),
        Arg::Buf(&partial),
        Arg::I32(rows as i32),
        Arg::I32(hidden as i32),
        Arg::I32(rpb as i32),
        Arg::F32(eps),
    ];
    dev.launch(k, cfg, &args)?;
    colsum_acc(dev, &partial, blocks, hidden, dw, "dw")
}
