//! Log-probabilities of given tokens and the entropy at a temperature, straight from the final
//! hidden states (the CPU reference of the fused lm_head log-prob kernel of the training-kernels
//! issue): the lm_head product fused with log-softmax, forward and backward, one
//! vocabulary chunk at a time, so the `[rows × vocab]` logits are never held whole (only
//! `[rows × chunk]`).
//!
//! For a row with hidden state h and target y, logits z_v = (h·W_v) / T over the vocabulary:
//!   lse = log Σ_v e^{z_v},  p_v = e^{z_v − lse},  logp = z_y − lse,
//!   μ = Σ_v p_v z_v,        entropy = lse − μ.
//! The forward keeps a running (max m, Σ e^{z−m}, Σ e^{z−m}·z) per row across chunks (online
//! softmax) and saves lse and μ. With upstream gradients g (of logp) and e (of entropy):
//!   ∂logp/∂z_v = [v = y] − p_v,      ∂entropy/∂z_v = p_v (μ − z_v),
//!   ∂L/∂(h·W_v) = (g ([v = y] − p_v) + e p_v (μ − z_v)) / T,
//! and the backward recomputes each chunk's logits to form that `[rows × chunk]` block D:
//!   ∂L/∂h += D · W_chunk,   ∂L/∂W_chunk += Dᵀ · h.

use super::gemm::{gemm_acc, gemm_acc_strided, StridedA, StridedB};
use super::linear::linear_backward_weight;
use super::simd;
use crate::ops::{LogProbShape, TokenLogProbs};
use rayon::prelude::*;

/// Vocabulary chunk size when none is given: 8192 columns × rows of f32 at a time.
pub const DEFAULT_VOCAB_CHUNK: usize = 8192;

/// The vocabulary chunks `[c0, c1)` of a call.
fn chunks(sh: &LogProbShape) -> impl Iterator<Item = (usize, usize)> {
    let c = sh.chunk.clamp(1, sh.vocab.max(1));
    let v = sh.vocab;
    (0..v.div_ceil(c)).map(move |i| (i * c, ((i + 1) * c).min(v)))
}

/// `[rows, c1 − c0]` tempered logits of one vocabulary chunk: hidden · W_chunkᵀ / T on the packed
/// GEMM, W_chunkᵀ read through strides (no transposed copy of the chunk).
fn chunk_logits(hidden: &[f32], lm_head: &[f32], rows: usize, sh: &LogProbShape, c0: usize, c1: usize) -> Vec<f32> {
    let (h, n) = (sh.hidden, c1 - c0);
    let mut z = vec![0f32; rows * n];
    let wt = StridedB { data: &lm_head[c0 * h..c1 * h], rs: 1, cs: h };
    gemm_acc_strided(rows, n, h, StridedA { data: hidden, rs: h, cs: 1 }, wt, &mut z);
    let inv_t = 1.0 / sh.temperature;
    z.par_chunks_mut(4096).for_each(|c| c.iter_mut().for_each(|v| *v *= inv_t));
    z
}

/// `x ← e^x` on a row: the 16-lane exp where the CPU has AVX-512, else the portable one.
fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU feature was just checked.
        return unsafe { simd::exp_slice_avx512(xs) };
    }
    simd::exp_slice(xs)
}

/// Forward: log-probs of `targets` (one per row of `hidden`, `[rows, hidden]`) and entropies.
pub fn logprobs_forward(hidden: &[f32], lm_head: &[f32], targets: &[u32], sh: LogProbShape) -> TokenLogProbs {
    let rows = targets.len();
    assert_eq!(hidden.len(), rows * sh.hidden, "hidden must be [rows, hidden]");
    assert_eq!(lm_head.len(), sh.vocab * sh.hidden, "lm_head must be [vocab, hidden]");
    assert!(sh.temperature > 0.0, "temperature must be positive");
    // Running state per row: (max, Σ e^{z−max}, Σ e^{z−max}·z, target logit).
    let mut st = vec![(f32::NEG_INFINITY, 0f64, 0f64, f32::NAN); rows];
    for (c0, c1) in chunks(&sh) {
        let z = chunk_logits(hidden, lm_head, rows, &sh, c0, c1);
        st.par_iter_mut().zip(z.par_chunks_exact(c1 - c0)).zip(targets.par_iter()).for_each_init(Vec::new, |e, ((s, zr), &y)| {
            let cmax = zr.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            if cmax > s.0 {
                let r = ((s.0 - cmax) as f64).exp();
                s.1 *= r;
                s.2 *= r;
                s.0 = cmax;
            }
            // e^{z − max} for the whole row at once (vector exp), then the two sums in f64 over
            // four interleaved accumulators (a single chain would wait on each add's latency).
            e.clear();
            e.extend(zr.iter().map(|&v| v - s.0));
            exp_in_place(e);
            let (mut se, mut sez) = ([0f64; 4], [0f64; 4]);
            for (ec, zc) in e.chunks(4).zip(zr.chunks(4)) {
                for l in 0..ec.len() {
                    se[l] += ec[l] as f64;
                    sez[l] += ec[l] as f64 * zc[l] as f64;
                }
            }
            s.1 += (se[0] + se[1]) + (se[2] + se[3]);
            s.2 += (sez[0] + sez[1]) + (sez[2] + sez[3]);
            if (c0..c1).contains(&(y as usize)) {
                s.3 = zr[y as usize - c0];
            }
        });
    }
    let mut out = TokenLogProbs { logp: vec![0.0; rows], entropy: vec![0.0; rows], lse: vec![0.0; rows], mean_z: vec![0.0; rows] };
    for (i, &(m, s, sz, zy)) in st.iter().enumerate() {
        let lse = m as f64 + s.ln();
        let mu = sz / s;
        out.lse[i] = lse as f32;
        out.mean_z[i] = mu as f32;
        out.logp[i] = (zy as f64 - lse) as f32;
        out.entropy[i] = (lse - mu) as f32;
    }
    out
}

/// Backward: accumulates ∂L/∂hidden into `d_hidden` (`[rows, hidden]`) and ∂L/∂lm_head into
/// `d_lm_head` (`[vocab, hidden]`), given ∂L/∂logp (`d_logp`) and optionally ∂L/∂entropy.
#[allow(clippy::too_many_arguments)]
pub fn logprobs_backward(
    hidden: &[f32],
    lm_head: &[f32],
    targets: &[u32],
    fwd: &TokenLogProbs,
    d_logp: &[f32],
    d_entropy: Option<&[f32]>,
    sh: LogProbShape,
    d_hidden: &mut [f32],
    d_lm_head: &mut [f32],
) {
    let rows = targets.len();
    let h = sh.hidden;
    assert_eq!(d_logp.len(), rows);
    assert_eq!(d_hidden.len(), rows * h);
    assert_eq!(d_lm_head.len(), sh.vocab * h);
    let inv_t = 1.0 / sh.temperature;
    for (c0, c1) in chunks(&sh) {
        let n = c1 - c0;
        // Overwritten in place: tempered logits → ∂L/∂(h·W) for this chunk.
        let mut d = chunk_logits(hidden, lm_head, rows, &sh, c0, c1);
        d.par_chunks_exact_mut(n).enumerate().for_each_init(Vec::new, |p, (i, dr)| {
            let (lse, mu, g) = (fwd.lse[i], fwd.mean_z[i], d_logp[i]);
            let e = d_entropy.map_or(0.0, |de| de[i]);
            let y = targets[i] as usize;
            let zy = (c0..c1).contains(&y).then(|| dr[y - c0]);
            p.clear();
            p.extend(dr.iter().map(|&z| z - lse));
            exp_in_place(p);
            for (v, &pv) in dr.iter_mut().zip(p.iter()) {
                let z = *v;
                *v = (g * (0.0 - pv) + e * pv * (mu - z)) * inv_t;
            }
            // The target's own column has the one-hot term (the same expression with onehot = 1).
            if let Some(z) = zy {
                let pv = p[y - c0];
                dr[y - c0] = (g * (1.0 - pv) + e * pv * (mu - z)) * inv_t;
            }
        });
        gemm_acc(rows, h, n, StridedA { data: &d, rs: n, cs: 1 }, &lm_head[c0 * h..c1 * h], d_hidden);
        linear_backward_weight(&d, hidden, &mut d_lm_head[c0 * h..c1 * h], rows, n, h);
    }
}
