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

/// The forward: `y = x · Wᵀ (+ b)`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, y: &mut [f32], m: usize, n: usize, k: usize) {
    matmul_nt(x, w, y, m, n, k);
    if let Some(b) = bias {
        add_bias(y, b);
    }
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
