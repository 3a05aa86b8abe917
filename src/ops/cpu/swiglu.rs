//! SwiGLU, forward and backward: the CPU reference of kernels/swiglu.cu. The model reads gate
//! and up from the fused gate|up projection's output `[rows, 2·inter]` (`silu_mul_fused`).
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

/// `silu_mul` over the fused gate|up projection's output `[rows, 2·inter]` (gate in the first
/// `inter` columns of a row, up in the rest): `out` `[rows, inter]`. The same f32 math per element.
pub fn silu_mul_fused(gate_up: &[f32], out: &mut [f32], rows: usize, inter: usize) {
    assert_eq!(gate_up.len(), rows * 2 * inter, "silu_mul_fused: gate_up is not [rows, 2·inter]");
    assert_eq!(out.len(), rows * inter, "silu_mul_fused: out is not [rows, inter]");
    if inter == 0 {
        return;
    }
    let f = |(o, gu): (&mut [f32], &[f32])| {
        let (g, u) = gu.split_at(inter);
        silu_mul(g, u, o);
    };
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(inter).zip(gate_up.par_chunks(2 * inter)).for_each(f);
    } else {
        out.chunks_mut(inter).zip(gate_up.chunks(2 * inter)).for_each(f);
    }
}

/// Backward of `silu_mul_fused`: `d_gate_up` `[rows, 2·inter]` (overwritten: dgate | dup per row).
pub fn silu_mul_fused_backward(gate_up: &[f32], dy: &[f32], d_gate_up: &mut [f32], rows: usize, inter: usize) {
    assert_eq!(gate_up.len(), rows * 2 * inter, "silu_mul_fused_backward: gate_up is not [rows, 2·inter]");
    assert_eq!(dy.len(), rows * inter, "silu_mul_fused_backward: dy is not [rows, inter]");
    assert_eq!(d_gate_up.len(), rows * 2 * inter, "silu_mul_fused_backward: d_gate_up is not [rows, 2·inter]");
    if inter == 0 {
        return;
    }
    let f = |((d, gu), dgu): ((&[f32], &[f32]), &mut [f32])| {
        let (g, u) = gu.split_at(inter);
        let (dg, du) = dgu.split_at_mut(inter);
        silu_mul_backward(g, u, d, dg, du);
    };
    if dy.len() >= PAR_MIN_ELEMS {
        dy.par_chunks(inter).zip(gate_up.par_chunks(2 * inter)).zip(d_gate_up.par_chunks_mut(2 * inter)).for_each(f);
    } else {
        dy.chunks(inter).zip(gate_up.chunks(2 * inter)).zip(d_gate_up.chunks_mut(2 * inter)).for_each(f);
    }
}
