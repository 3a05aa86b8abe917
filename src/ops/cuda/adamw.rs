//! Launchers of kernels/adamw.cu: the optimizer over flat f32 buffers (CPU reference:
//! src/ops/cpu/adamw.rs; the host logic around them — clip coefficient, the skip on a
//! non-finite norm, bias correction, the schedule — is src/train/adamw.rs).
use super::launch::{elementwise_vec, need_t};
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use crate::ops::AdamWStep;
use anyhow::Result;

/// One AdamW step over `n` f32 elements of w (the master weights), g, m, v; with `w_bf16`, also
/// writes bf16(w) there (the rollout's copy, in the same pass).
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(dev: &Device, w: &Buffer, g: &Buffer, m: &Buffer, v: &Buffer, w_bf16: Option<&Buffer>, n: usize, s: &AdamWStep) -> Result<()> {
    let k = "adamw_f32";
    for (b, what) in [(w, "weights"), (g, "gradients"), (m, "first moments"), (v, "second moments")] {
        need_t(b, n, DType::F32, k, what)?;
    }
    if let Some(b) = w_bf16 {
        need_t(b, n, DType::Bf16, k, "bf16 weights")?;
    }
    if n == 0 {
        return Ok(());
    }
    let args = [
        Arg::Buf(w),
        Arg::Buf(g),
        Arg::Buf(m),
        Arg::Buf(v),
        w_bf16.map_or(Arg::U64(0), Arg::Buf),
        Arg::I64(n as i64),
        Arg::F32(s.beta1),
        Arg::F32(s.beta2),
        Arg::F32(s.eps),
        Arg::F32(s.step_size),
        Arg::F32(s.bc2_sqrt),
        Arg::F32(s.decay),
    ];
    dev.launch(k, elementwise_vec(n, 4), &args)
}

/// `x *= s` over `n` f32 elements.
pub fn scale(dev: &Device, x: &Buffer, n: usize, s: f32) -> Result<()> {
    let k = "scale_f32";
    need_t(x, n, DType::F32, k, "x")?;
    if n == 0 {
        return Ok(());
    }
    dev.launch(k, elementwise_vec(n, 4), &[Arg::Buf(x), Arg::I64(n as i64), Arg::F32(s)])
}

/// Elements per block of the first stage of `sum_squares`: a multiple of 1024 (so 16-byte
/// aligned chunks) giving at most 2048 blocks. A function of n alone: the same partition, hence
/// the same bits, on every device.
pub fn sum_squares_chunk(n: usize) -> usize {
    n.div_ceil(2048).next_multiple_of(1024).max(1024)
}

/// Σ x² over `n` f32 elements, in f64 (two deterministic stages; 8 bytes come back to the host).
pub fn sum_squares(dev: &Device, x: &Buffer, n: usize) -> Result<f64> {
    let k = "sum_squares_f32_partial";
    need_t(x, n, DType::F32, k, "x")?;
    if n == 0 {
        return Ok(0.0);
    }
    let chunk = sum_squares_chunk(n);
    let parts = n.div_ceil(chunk);
    let partial = dev.alloc(parts * 8)?;
    let out = dev.alloc(8)?;
    let cfg = LaunchConfig { grid: Dim3::x(parts as u32), block: Dim3::x(256), shared_bytes: 0 };
    dev.launch(k, cfg, &[Arg::Buf(x), Arg::I64(n as i64), Arg::I64(chunk as i64), Arg::Buf(&partial)])?;
    let cfg = LaunchConfig { grid: Dim3::x(1), block: Dim3::x(256), shared_bytes: 0 };
    dev.launch("sum_squares_f64_final", cfg, &[Arg::Buf(&partial), Arg::I32(parts as i32), Arg::Buf(&out)])?;
    Ok(dev.download::<f64>(&out)?[0])
}
