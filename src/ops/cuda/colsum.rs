//! Launchers of kernels/colsum.cu: deterministic two-stage column sums (the q/k/v bias gradients,
//! and the second stage of RMSNorm's weight gradient). CPU reference: src/ops/cpu/linear.rs
//! `bias_backward`.
use super::launch::{need, need_t};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// Rows per group (per block) of the first stage for `rows` rows: ~256 groups at long batches,
/// at least 4 rows each. A function of the row count alone, so the sums' order (and bits) do not
/// depend on the device.
pub fn rows_per_group(rows: usize) -> usize {
    rows.div_ceil(256).max(4)
}

/// `out[c] += Σ_g partial[g, c]` (f32, groups in order).
pub(crate) fn colsum_acc(dev: &Device, partial: &Buffer, groups: usize, cols: usize, out: &Buffer, what: &str) -> Result<()> {
    let k = "colsum_f32_acc";
    need(partial, groups * cols * 4, k, "partial")?;
    need_t(out, cols, DType::F32, k, what)?;
    ensure!(groups <= i32::MAX as usize && cols <= i32::MAX as usize, "{k}: {groups} groups of {cols} columns");
    let cfg = LaunchConfig { grid: Dim3::x(cols.div_ceil(256) as u32), block: Dim3::x(256), shared_bytes: 0 };
    dev.launch(k, cfg, &[Arg::Buf(partial), Arg::I32(groups as i32), Arg::I32(cols as i32), Arg::Buf(out)])
}

/// `db[c] += Σ_r dy[r, c]`: dy `[rows, cols]` bf16, db `[cols]` f32 (the bias gradient).
pub fn bias_backward(dev: &Device, dy: &Buffer, db: &Buffer, rows: usize, cols: usize) -> Result<()> {
    let k = "colsum_bf16_partial";
    need_t(dy, rows * cols, DType::Bf16, k, "dy")?;
    need_t(db, cols, DType::F32, k, "db")?;
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    ensure!(rows <= i32::MAX as usize && rows * cols <= isize::MAX as usize, "{k}: {rows} rows");
    let rpg = rows_per_group(rows);
    let groups = rows.div_ceil(rpg);
    let partial = dev.alloc(groups * cols * 4)?;
    let cfg = LaunchConfig { grid: Dim3::xy(cols.div_ceil(256) as u32, groups as u32), block: Dim3::x(128), shared_bytes: 0 };
    let args = [Arg::Buf(dy), Arg::Buf(&partial), Arg::I32(rows as i32), Arg::I32(cols as i32), Arg::I32(rpg as i32)];
    dev.launch(k, cfg, &args)?;
    colsum_acc(dev, &partial, groups, cols, db, "db")
}
