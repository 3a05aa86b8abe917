//! Linear layers, forward and backward: `y[m, n] = x[m, k] · W[n, k]ᵀ (+ b)`, the weights in the
//! PyTorch layout `[out, in]`. The CPU reference of the CUDA backend's GEMMs (cuBLASLt).
//!
//! Forward: `matmul::matmul_nt` (few rows: decode) or the packed GEMM of `gemm.rs` (many rows).
//! Backward (conventions of every backward here: `dy` is ∂L/∂(op output); input gradients are
//! overwritten, weight gradients *accumulated* (`dw +=`), so the gradients of a tied or shared
//! tensor, and of micro-batches, simply add up):
//!   dx[m, k]  = dy[m, n] · W[n, k]          (NN)
//!   dW[n, k] += dy[m, n]ᵀ · x[m, k]         (TN: the token dimension is the reduction)
//!   db[n]    += Σ_rows dy[row, n]
//! Napkin math: 2·m·n·k FLOPs per product, FMA-bound (see gemm.rs).

pub use super::gemm::{gemm_acc, StridedA};
pub use super::matmul::{add_bias, matmul_nt};
use rayon::prelude::*;

/// The forward: `y = x · Wᵀ (+ b)`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], m: usize, n: usize, k: usize) {
    matmul_nt(x, w, y, m, n, k);
    if let Some(b) = bias {
        add_bias(y, b);
    }
}

/// `out[c, r] = x[r, c]`: a `[rows, cols]` matrix transposed to `[cols, rows]`, a block of 32
/// output rows per task (reads stay within a few cache lines per input row).
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    transpose_into(x, rows, cols, &mut out);
    out
}

/// `transpose` into `out` (`[cols, rows]`, overwritten).
pub fn transpose_into(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    assert_eq!(x.len(), rows * cols, "transpose: x is not [rows, cols]");
    assert_eq!(out.len(), rows * cols, "transpose: out is not [cols, rows]");
    const B: usize = 32;
    if rows == 0 || cols == 0 {
        return;
    }
    out.par_chunks_mut(B * rows).enumerate().for_each(|(cb, block)| {
        let (c0, cn) = (cb * B, block.len() / rows);
        for r in 0..rows {
            for (c, v) in x[r * cols + c0..r * cols + c0 + cn].iter().enumerate() {
                block[c * rows + r] = *v;
            }
        }
    });
}

/// Input gradient of a linear layer: `dx[m, k] = dy[m, n] · W[n, k]` (overwrites dx).
/// Blocked, packed, parallel outer-product GEMM (`super::gemm::gemm_acc`), W read in place.
pub fn linear_backward_input(dy: &[f32], w: &[f32], dx: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(dy.len(), m * n, "linear_backward_input: dy is not [m, n]");
    assert_eq!(w.len(), n * k, "linear_backward_input: w is not [n, k]");
    assert_eq!(dx.len(), m * k, "linear_backward_input: dx is not [m, k]");
    dx.fill(0.0);
    gemm_acc(m, k, n, StridedA { data: dy, rs: n, cs: 1 }, w, dx);
}

/// Weight gradient of a linear layer: `dW[n, k] += dy[m, n]ᵀ · x[m, k]` (the token dimension m
/// is the reduction; dyᵀ is read through strides, no copy).
pub fn linear_backward_weight(dy: &[f32], x: &[f32], dw: &mut [f32], m: usize, n: usize, k: usize) {
    assert_eq!(dy.len(), m * n, "linear_backward_weight: dy is not [m, n]");
    assert_eq!(x.len(), m * k, "linear_backward_weight: x is not [m, k]");
    assert_eq!(dw.len(), n * k, "linear_backward_weight: dw is not [n, k]");
    gemm_acc(n, k, m, StridedA { data: dy, rs: 1, cs: n }, x, dw);
}

/// Bias gradient: `db[n] += Σ_rows dy[row, n]` (column sums in f64).
pub fn bias_backward(dy: &[f32], db: &mut [f32]) {
    let n = db.len();
    let mut acc = vec![0f64; n];
    for row in dy.chunks_exact(n) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v as f64;
        }
    }
    for (d, a) in db.iter_mut().zip(acc) {
        *d += a as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_round_trips_ragged_shapes() {
        for &(r, c) in &[(1, 1), (3, 70), (33, 5), (65, 97)] {
            let x: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = transpose(&x, r, c);
            for i in 0..r {
                for j in 0..c {
                    assert_eq!(t[j * r + i], x[i * c + j]);
                }
            }
            assert_eq!(transpose(&t, c, r), x);
        }
    }
}
