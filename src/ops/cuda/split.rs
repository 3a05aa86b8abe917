//! Launchers of kernels/split_cols.cu (CPU reference: src/ops/cpu/split.rs): the column blocks
//! of a fused projection's output `[rows, Σ widths]` to and from their own tensors.
use super::launch::{elementwise, need_t, opt};
use crate::device::{Arg, Buffer, DType, Device};
use anyhow::{ensure, Result};

fn widths3(k: &str, widths: &[usize]) -> Result<[usize; 3]> {
    ensure!(widths.len() == 2 || widths.len() == 3, "{k}: {} parts (the kernel takes 2 or 3)", widths.len());
    Ok([widths[0], widths[1], widths.get(2).copied().unwrap_or(0)])
}

/// `parts[p][r, c] = src[r, off_p + c]` for 2 or 3 parts of `widths`.
pub fn split_cols(dev: &Device, src: &Buffer, parts: &[&Buffer], rows: usize, widths: &[usize]) -> Result<()> {
    let k = "split_cols_bf16";
    let n = widths3(k, widths)?;
    ensure!(parts.len() == widths.len(), "{k}: {} parts for {} widths", parts.len(), widths.len());
    let w: usize = n.iter().sum();
    need_t(src, rows * w, DType::Bf16, k, "src")?;
    for (p, b) in parts.iter().enumerate() {
        need_t(b, rows * n[p], DType::Bf16, k, ["part 0", "part 1", "part 2"][p])?;
    }
    if rows * w == 0 {
        return Ok(());
    }
    let args = [Arg::Buf(src), Arg::Buf(parts[0]), Arg::Buf(parts[1]), opt(parts.get(2).copied()), Arg::I64(rows as i64), Arg::I64(n[0] as i64), Arg::I64(n[1] as i64), Arg::I64(n[2] as i64)];
    dev.launch(k, elementwise(rows * w), &args)
}

/// `dst[r, off_p + c] = parts[p][r, c]` for 2 or 3 parts of `widths` (the inverse of `split_cols`).
pub fn concat_cols(dev: &Device, parts: &[&Buffer], dst: &Buffer, rows: usize, widths: &[usize]) -> Result<()> {
    let k = "concat_cols_bf16";
    let n = widths3(k, widths)?;
    ensure!(parts.len() == widths.len(), "{k}: {} parts for {} widths", parts.len(), widths.len());
    let w: usize = n.iter().sum();
    need_t(dst, rows * w, DType::Bf16, k, "dst")?;
    for (p, b) in parts.iter().enumerate() {
        need_t(b, rows * n[p], DType::Bf16, k, ["part 0", "part 1", "part 2"][p])?;
    }
    if rows * w == 0 {
        return Ok(());
    }
    let args = [Arg::Buf(parts[0]), Arg::Buf(parts[1]), opt(parts.get(2).copied()), Arg::Buf(dst), Arg::I64(rows as i64), Arg::I64(n[0] as i64), Arg::I64(n[1] as i64), Arg::I64(n[2] as i64)];
    dev.launch(k, elementwise(rows * w), &args)
}
