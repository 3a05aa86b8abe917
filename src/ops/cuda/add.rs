//! Launchers of kernels/add.cu (CPU reference: src/ops/cpu/norm.rs `add_inplace`,
//! src/ops/cpu/matmul.rs `add_bias`).
use super::launch::{elementwise_vec, need_t};
use crate::device::{Arg, Buffer, DType, Device};
use anyhow::Result;

/// `x += y` over `n` bf16 elements.
pub fn add(dev: &Device, x: &Buffer, y: &Buffer, n: usize) -> Result<()> {
    let k = "add_bf16";
    need_t(x, n, DType::Bf16, k, "x")?;
    need_t(y, n, DType::Bf16, k, "y")?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(k, elementwise_vec(n, 8), &[Arg::Buf(x), Arg::Buf(y), Arg::I64(n as i64)])
}

/// `y[r] += b` for each of `rows` rows of `cols` bf16 elements.
pub fn add_bias(dev: &Device, y: &Buffer, b: &Buffer, rows: usize, cols: usize) -> Result<()> {
    let k = "add_bias_bf16";
    need_t(y, rows * cols, DType::Bf16, k, "y")?;
    need_t(b, cols, DType::Bf16, k, "bias")?;
    if rows * cols == 0 {
        return Ok(());
    }
    anyhow::ensure!(cols <= i32::MAX as usize, "{k}: {cols} columns");
    dev.launch(k, elementwise_vec(rows * cols, 8), &[Arg::Buf(y), Arg::Buf(b), Arg::I64(rows as i64), Arg::I32(cols as i32)])
}
