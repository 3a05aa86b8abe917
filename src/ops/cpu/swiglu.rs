//! SwiGLU, forward and backward: the CPU reference of kernels/swiglu.cu.
//!   y = silu(g) · u,  silu(g) = g·σ(g)
//!   dg = dy · u · σ(g)·(1 + g·(1 − σ(g))),   du = dy · silu(g)

use rayon::prelude::*;

/// Rows smaller than this are not worth a rayon task each.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// `out[i] = silu(gate[i]) * up[i]`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let f = |((o, g), u): ((&mut f32, &f32), &f32)| *o = *g / (1.0 + (-*g).exp()) * u;
    if gate.len() >= PAR_MIN_ELEMS {
        out.par_iter_mut().zip(gate.par_iter()).zip(up.par_iter()).for_each(f);
    } else {
        out.iter_mut().zip(gate).zip(up).for_each(f);
    }
}

/// Backward of `silu_mul` from the saved pre-activations `gate` and `up` (both outputs
/// overwritten).
#[allow(clippy::type_complexity)]
pub fn silu_mul_backward(gate: &[f32], up: &[f32], dy: &[f32], dgate: &mut [f32], dup: &mut [f32]) {
    let f = |(((g, u), d), (dg, du)): (((&f32, &f32), &f32), (&mut f32, &mut f32))| {
        let s = 1.0 / (1.0 + (-*g).exp());
        *du = d * g * s;
        *dg = d * u * s * (1.0 + g * (1.0 - s));
    };
    if gate.len() >= PAR_MIN_ELEMS {
        gate.par_iter().zip(up.par_iter()).zip(dy.par_iter()).zip(dgate.par_iter_mut().zip(dup.par_iter_mut())).for_each(f);
    } else {
        gate.iter().zip(up).zip(dy).zip(dgate.iter_mut().zip(dup.iter_mut())).for_each(f);
    }
}
