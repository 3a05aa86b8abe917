//! The GEMM of interpret mode: `y[m, n] = x[m, k] · w[n, k]ᵀ` in f32 on the host, the stand-in
//! for cuBLASLt when kernels run on the CPU. Inputs are the bf16 values widened to f32 (exact),
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
    }
}
