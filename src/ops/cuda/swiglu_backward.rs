//! Launcher of kernels/swiglu_backward.cu (CPU reference: src/ops/cpu/swiglu.rs
//! `silu_mul_backward`).
use super::launch::{elementwise_vec, need_t};
use crate::device::{Arg, Buffer, DType, Device};
use anyhow::Result;

/// `dgate`, `dup` (overwritten) of `out = silu(gate) · up` from `dy`, over `n` bf16 elements.
pub fn silu_mul_backward(dev: &Device, gate: &Buffer, up: &Buffer, dy: &Buffer, dgate: &Buffer, dup: &Buffer, n: usize) -> Result<()> {
    let k = "silu_mul_backward_bf16";
    for (b, w) in [(gate, "gate"), (up, "up"), (dy, "dy"), (dgate, "dgate"), (dup, "dup")] {
        need_t(b, n, DType::Bf16, k, w)?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = [Arg::Buf(gate), Arg::Buf(up), Arg::Buf(dy), Arg::Buf(dgate), Arg::Buf(dup), Arg::I64(n as i64)];
    dev.launch(k, elementwise_vec(n, 8), &args)
}
