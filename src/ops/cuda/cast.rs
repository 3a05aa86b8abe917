//! Launchers of kernels/cast.cu: f32 ↔ bf16, element-wise (round to nearest even).
use super::launch::{elementwise, elementwise_vec, need, BF16};
use crate::device::{Arg, Buffer, Device};
use anyhow::Result;

/// `out = bf16(in)` over `n` elements.
pub fn cast_f32_to_bf16(dev: &Device, input: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "cast_f32_to_bf16";
    need(input, n * 4, k, "in")?;
    need(out, n * BF16, k, "out")?;
    // 4 elements per thread and step when the pointers allow it (see kernels/cast.cu).
    dev.launch(k, elementwise_vec(n, 4), &[Arg::Buf(input), Arg::Buf(out), Arg::I64(n as i64)])
}

pub fn cast_bf16_to_f32(dev: &Device, input: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "cast_bf16_to_f32";
    need(input, n * BF16, k, "in")?;
    need(out, n * 4, k, "out")?;
    dev.launch(k, elementwise(n), &[Arg::Buf(input), Arg::Buf(out), Arg::I64(n as i64)])
}
