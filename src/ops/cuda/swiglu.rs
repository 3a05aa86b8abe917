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
    dev.launch(k, elementwise(n), &[Arg::Buf(gate), Arg::Buf(up), Arg::Buf(out), Arg::I64(n as i64)])
}
