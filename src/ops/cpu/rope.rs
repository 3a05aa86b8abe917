//! Rotary position embeddings (rotate-half, as Hugging Face Qwen2/Llama), forward and backward:
//! the CPU reference of kernels/rope.cu.
//!
//! For every head of a token at position p and i < d/2, with angle = p · θ^(−2i/d):
//!   (x_i, x_{i+d/2}) ← (x_i·cos − x_{i+d/2}·sin, x_{i+d/2}·cos + x_i·sin)
//! The rotation is orthogonal, so the backward is the rotation by −angle.

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

/// RoPE on every head of one token (`x` holds heads × head_dim values), in place.
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

/// Backward of `rope_inplace` on one token: for i < d/2 with (a, b) = (g_i, g_{i+d/2}):
///   (a, b) ← (a·cos + b·sin, b·cos − a·sin)
pub fn rope_backward_inplace(g: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in g.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (g0, g1) = (a[i], b[i]);
            a[i] = g0 * cos[i] + g1 * sin[i];
            b[i] = g1 * cos[i] - g0 * sin[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The backward undoes the rotation.
        rope_backward_inplace(&mut x, 8, &c, &s);
        assert!(x.iter().zip(&orig).all(|(a, b)| (a - b).abs() < 1e-4));
    }
}
