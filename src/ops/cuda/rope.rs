//! Launcher of kernels/rope.cu (CPU reference: src/ops/cpu/rope.rs).
use super::launch::{grid_1d, need, opt, BF16};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// Adds the q/k biases (if any) and applies rotate-half RoPE to q `[tokens, nh·d]` and
/// k `[tokens, nkv·d]` in place, at the positions of `meta`.
#[allow(clippy::too_many_arguments)]
pub fn rope_qk(
    dev: &Device,
    q: &Buffer,
    k: &Buffer,
    q_bias: Option<&Buffer>,
    k_bias: Option<&Buffer>,
    meta: &TokenMeta,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<()> {
    let kn = "rope_qk_bf16";
    ensure!(head_dim % 2 == 0 && head_dim <= 512, "{kn}: head_dim {head_dim} is odd or > 512");
    let t = meta.tokens;
    need(q, t * num_heads * head_dim * BF16, kn, "q")?;
    need(k, t * num_kv_heads * head_dim * BF16, kn, "k")?;
    if let Some(b) = q_bias {
        need(b, num_heads * head_dim * BF16, kn, "q_bias")?;
    }
    if let Some(b) = k_bias {
        need(b, num_kv_heads * head_dim * BF16, kn, "k_bias")?;
    }
    let cfg = LaunchConfig { grid: grid_1d(t, kn)?, block: Dim3::x(128), shared_bytes: 0 };
    let args = [
        Arg::Buf(q),
        Arg::Buf(k),
        opt(q_bias),
        opt(k_bias),
        Arg::Buf(&meta.positions),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::F32(theta),
    ];
    dev.launch(kn, cfg, &args)
}
