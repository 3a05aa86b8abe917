//! Launcher of kernels/swiglu.cu (CPU reference: src/ops/cpu/swiglu.rs).
use super::launch::{elementwise, need, BF16};
use crate::device::{Arg, Buffer, Device};
use anyhow::Result;

/// `out = silu(gate) * up` over `n` elements (`out` may be `gate`).
pub fn silu_mul(dev: &Device, gate: &Buffer, up: &Buffer, out: &Buffer, n: usize) -> Result<()> {
    let k = "silu_mul_bf16";
    for (b, w) in [(gate, "gate"), (up, "up"), (out, "out")] {
        need(b, n * BF16, k, w)?;
    }
    dev.launch(k, elementwise(n), &[Arg::Buf(gate), Arg::Buf(up), Arg::Buf(out), Arg::I64(1), Arg::I64(n as i64), Arg::I64(n as i64)])
}

/// `out[r, j] = silu(gate_up[r, j]) * gate_up[r, inter + j]`: SwiGLU read straight from the fused
/// gate|up projection's output `[rows, 2·inter]`; `out` is `[rows, inter]`.
pub fn silu_mul_fused(dev: &Device, gate_up: &Buffer, out: &Buffer, rows: usize, inter: usize) -> Result<()> {
    let k = "silu_mul_bf16";
    need(gate_up, rows * 2 * inter * BF16, k, "gate_up")?;
    need(out, rows * inter * BF16, k, "out")?;
    if rows * inter == 0 {
        return Ok(());
    }
    let args = [Arg::Buf(gate_up), Arg::BufAt(gate_up, inter * BF16), Arg::Buf(out), Arg::I64(rows as i64), Arg::I64(inter as i64), Arg::I64(2 * inter as i64)];
    dev.launch(k, elementwise(rows * inter), &args)
}
