//! The AdamW update over one flat buffer of parameters (the CPU reference of the device
//! optimizer of the training-kernels issue). The host logic around it — clipping, the
//! non-finite skip, bias correction, the schedule — is `train::adamw`.
//!
//! Per element, with the step's coefficients (`AdamWStep`):
//!   θ ← θ · (1 − η λ)
//!   m ← m + (1 − β1)(g − m),   v ← β2 v + (1 − β2) g²
//!   θ ← θ − (η / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
//! Napkin math: 16 bytes read and 12 written per parameter (θ, g, m, v in f32): memory-bound.

use super::super::AdamWStep;
use rayon::prelude::*;

pub fn adamw_update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamWStep) {
    assert!(w.len() == g.len() && w.len() == m.len() && w.len() == v.len(), "adamw_update: buffers of different lengths");
    w.par_iter_mut().zip(g.par_iter()).zip(m.par_iter_mut().zip(v.par_iter_mut())).with_min_len(4096).for_each(|((p, &g), (m, v))| {
        *p *= s.decay;
        *m += (1.0 - s.beta1) * (g - *m);
        *v = *v * s.beta2 + (1.0 - s.beta2) * g * g;
        let denom = v.sqrt() / s.bc2_sqrt + s.eps;
        *p -= s.step_size * (*m / denom);
    });
}

/// Σ g² in f64, in fixed chunks summed in order (the result does not depend on threads).
pub fn sum_squares(g: &[f32]) -> f64 {
    let parts: Vec<f64> = g.par_chunks(1 << 16).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).collect();
    parts.iter().sum()
}

pub fn scale(g: &mut [f32], s: f32) {
    g.par_chunks_mut(1 << 16).for_each(|c| c.iter_mut().for_each(|v| *v *= s));
}
