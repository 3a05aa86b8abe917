//! Element-wise and row-wise ops of the Qwen2/Llama forward: the CPU references that the
//! CUDA kernels are checked against. Plain loops, f32 math, rows in parallel with rayon.

use rayon::prelude::*;

/// Rows smaller than this are not worth a rayon task each.
const PAR_MIN_ELEMS: usize = 1 << 14;

/// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight` for every row r (Hugging Face RMSNorm).
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let h = weight.len();
    let row = |(xr, or): (&[f32], &mut [f32])| {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = w * (v * inv);
        }
    };
    if x.len() >= PAR_MIN_ELEMS {
        x.par_chunks_exact(h).zip(out.par_chunks_exact_mut(h)).for_each(row);
    } else {
        x.chunks_exact(h).zip(out.chunks_exact_mut(h)).for_each(row);
    }
}

/// `x += y`.
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// SwiGLU: `gate[i] = silu(gate[i]) * up[i]` with silu(v) = v·σ(v).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    let f = |(g, u): (&mut f32, &f32)| *g = *g / (1.0 + (-*g).exp()) * u;
    if gate.len() >= PAR_MIN_ELEMS {
        gate.par_iter_mut().zip(up.par_iter()).for_each(f);
    } else {
        gate.iter_mut().zip(up).for_each(f);
    }
}

/// The cos/sin of RoPE at one position, computed as Hugging Face does (f32 inverse
/// frequencies `1 / θ^(2i/d)`, angle = position · inv_freq in f32) so parity holds to f32 rounding.
pub fn rope_cos_sin(pos: usize, head_dim: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    (0..half)
        .map(|i| {
            let inv_freq = 1.0 / theta.powf((2 * i) as f32 / head_dim as f32);
            let angle = pos as f32 * inv_freq;
            (angle.cos(), angle.sin())
        })
        .unzip()
}

/// Rotate-half RoPE on every head of one token: for i < d/2,
/// `(x_i, x_{i+d/2}) ← (x_i·cos − x_{i+d/2}·sin, x_{i+d/2}·cos + x_i·sin)`.
pub fn rope_inplace(x: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in x.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x0, x1) = (a[i], b[i]);
            a[i] = x0 * cos[i] - x1 * sin[i];
            b[i] = x1 * cos[i] + x0 * sin[i];
        }
    }
}

/// log-softmax of one row, in f64 for the normaliser (a 150K-entry sum in f32 loses digits).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        let x = vec![3.0f32; 8];
        let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let mut out = vec![f32::NAN; 8];
        rmsnorm(&x, &w, 0.0, &mut out);
        for (o, w) in out.iter().zip(&w) {
            assert!((o - w).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_at_position_zero_is_identity_and_preserves_norm() {
        let (c, s) = rope_cos_sin(0, 8, 10000.0);
        let mut x: Vec<f32> = (0..16).map(|i| i as f32 - 3.0).collect();
        let orig = x.clone();
        rope_inplace(&mut x, 8, &c, &s);
        assert_eq!(x, orig);
        let (c, s) = rope_cos_sin(37, 8, 10000.0);
        rope_inplace(&mut x, 8, &c, &s);
        let n0: f32 = orig.iter().map(|v| v * v).sum();
        let n1: f32 = x.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 && x != orig);
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, -50.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
