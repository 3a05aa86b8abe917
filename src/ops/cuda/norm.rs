//! Launcher of kernels/rmsnorm.cu (CPU reference: src/ops/cpu/norm.rs).
use super::launch::{grid_1d, need, opt, BF16, ROW_THREADS};
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::Result;

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
