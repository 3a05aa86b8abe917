//! Launcher of kernels/rope_backward.cu (CPU reference: src/ops/cpu/rope.rs
//! `rope_backward_inplace`).
use super::launch::{grid_1d, need, need_t};
use super::meta::TokenMeta;
use crate::device::{Arg, Buffer, DType, Device, Dim3, LaunchConfig};
use anyhow::{ensure, Result};

/// The backward of `rope_qk`'s rotation, in place on dq `[tokens, nh·d]` and dk `[tokens, nkv·d]`
/// (bf16), at the positions of `meta`.
#[allow(clippy::too_many_arguments)]
pub fn rope_qk_backward(
    dev: &Device,
    dq: &Buffer,
    dk: &Buffer,
    meta: &TokenMeta,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<()> {
    let kn = "rope_qk_backward_bf16";
    ensure!(head_dim % 2 == 0 && head_dim > 0 && head_dim <= 512, "{kn}: head_dim {head_dim} is odd, 0 or > 512");
    let t = meta.tokens;
    need_t(dq, t * num_heads * head_dim, DType::Bf16, kn, "dq")?;
    need_t(dk, t * num_kv_heads * head_dim, DType::Bf16, kn, "dk")?;
    need(&meta.positions, t * 4, kn, "positions")?;
    let cfg = LaunchConfig { grid: grid_1d(t, kn)?, block: Dim3::x(128), shared_bytes: 0 };
    let args = [
        Arg::Buf(dq),
        Arg::Buf(dk),
        Arg::Buf(&meta.positions),
        Arg::I32(num_heads as i32),
        Arg::I32(num_kv_heads as i32),
        Arg::I32(head_dim as i32),
        Arg::F32(theta),
    ];
    dev.launch(kn, cfg, &args)
}
