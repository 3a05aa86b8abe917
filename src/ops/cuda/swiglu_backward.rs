//! Launcher of kernels/swiglu_backward.cu (CPU reference: src/ops/cpu/swiglu.rs
//! `silu_mul_backward`, `silu_mul_fused_backward`).
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
    let args = [Arg::Buf(gate), Arg::Buf(up), Arg::Buf(dy), Arg::Buf(dgate), Arg::Buf(dup), Arg::I64(1), Arg::I64(n as i64), Arg::I64(n as i64)];
    dev.launch(k, elementwise_vec(n, 8), &args)
}

/// The backward of `silu_mul_fused`: `d_gate_up` `[rows, 2·inter]` (overwritten: dgate | dup per
/// row, the fused projection's output gradient) from `gate_up` and `dy` `[rows, inter]`.
pub fn silu_mul_fused_backward(dev: &Device, gate_up: &Buffer, dy: &Buffer, d_gate_up: &Buffer, rows: usize, inter: usize) -> Result<()> {
    let k = "silu_mul_backward_bf16";
    need_t(gate_up, rows * 2 * inter, DType::Bf16, k, "gate_up")?;
    need_t(dy, rows * inter, DType::Bf16, k, "dy")?;
    need_t(d_gate_up, rows * 2 * inter, DType::Bf16, k, "d_gate_up")?;
    if rows * inter == 0 {
        return Ok(());
    }
    let off = inter * 2; // bytes to the up half of a row
    let args = [
        Arg::Buf(gate_up),
        Arg::BufAt(gate_up, off),
        Arg::Buf(dy),
        Arg::Buf(d_gate_up),
        Arg::BufAt(d_gate_up, off),
        Arg::I64(rows as i64),
        Arg::I64(inter as i64),
        Arg::I64(2 * inter as i64),
    ];
    dev.launch(k, elementwise_vec(rows * inter, 8), &args)
}
