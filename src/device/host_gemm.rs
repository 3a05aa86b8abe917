//! The GEMMs of interpret mode, in f32 on the host, the stand-ins for cuBLASLt when kernels run on
//! the CPU: `y[m, n] = x[m, k] · w[n, k]ᵀ` (the forward, NT), and for the backward
//! `dx[m, k] = dy[m, n] · w[n, k]` (NN) and `dw[n, k] += dy[m, n]ᵀ · x[m, k]` (TN, accumulated). Inputs are the bf16 values widened to f32 (exact),
//! so the result differs from a GPU's only by accumulation order and the final bf16 rounding.
//!
//! Deliberately plain (the device layer knows nothing of the CPU backend's packed GEMM): rows of
//! y in parallel, each element a dot product in eight independent lanes so it vectorises.
//! Interpret mode runs test-sized models, where this is not the bottleneck (the fibers are).

use rayon::prelude::*;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

pub fn matmul_nt(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0f32; m * n];
    if k == 0 || n == 0 {
        return y;
    }
    y.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let xi = &x[i * k..(i + 1) * k];
        for (j, out) in row.iter_mut().enumerate() {
            *out = dot(xi, &w[j * k..(j + 1) * k]);
        }
    });
    y
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = a[r * cols + c];
        }
    }
    t
}

/// `dx[m, k] = dy[m, n] · w[n, k]`: the NT product with w transposed once.
pub fn matmul_nn(dy: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    matmul_nt(dy, &transpose(w, n, k), m, k, n)
}

/// `dw[n, k] += dy[m, n]ᵀ · x[m, k]`: the NT product of the two transposes, added to dw in f32.
pub fn matmul_tn_acc(dy: &[f32], x: &[f32], dw: &mut [f32], m: usize, n: usize, k: usize) {
    let prod = matmul_nt(&transpose(dy, m, n), &transpose(x, m, k), n, k, m);
    dw.iter_mut().zip(prod).for_each(|(d, p)| *d += p);
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_a_naive_product() {
        let (m, n, k) = (3, 5, 19);
        let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let y = super::matmul_nt(&x, &w, m, n, k);
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
                assert!((y[i * n + j] as f64 - want).abs() < 1e-5, "y[{i},{j}]");
            }
        }
        // NN and TN against the same naive sums.
        let dy: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.23).cos()).collect();
        let dx = super::matmul_nn(&dy, &w, m, n, k);
        let mut dw = vec![0.5f32; n * k];
        super::matmul_tn_acc(&dy, &x, &mut dw, m, n, k);
        for i in 0..m {
            for p in 0..k {
                let want: f64 = (0..n).map(|j| dy[i * n + j] as f64 * w[j * k + p] as f64).sum();
                assert!((dx[i * k + p] as f64 - want).abs() < 1e-5, "dx[{i},{p}]");
            }
        }
        for j in 0..n {
            for p in 0..k {
                let want: f64 = 0.5 + (0..m).map(|i| dy[i * n + j] as f64 * x[i * k + p] as f64).sum::<f64>();
                assert!((dw[j * k + p] as f64 - want).abs() < 1e-5, "dw[{j},{p}]");
            }
        }
    }
}
