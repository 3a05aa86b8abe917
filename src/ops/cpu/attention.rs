//! Causal grouped-query attention, the CPU reference of the attention kernels:
//! - over the paged KV cache (inference: prefill, chunked prefill, decode) — the reference of
//!   kernels/attention_prefill.cu, attention_decode.cu and attention_paged.cu;
//! - over packed whole sequences with the row log-sum-exp, and its backward (training) — the
//!   reference of the packed-sequence kernels of the training-kernels issue.
//!
//! For a query token at position p of its sequence and query head h (KV head h / group):
//!   s_j = q·k_j / sqrt(d) for j = 0..=p,   lse = log Σ_j e^{s_j},   out = Σ_j e^{s_j − lse} · v_j
//! In the paged form the token's own K/V must already be in the cache, so prefill of a chunk
//! writes the whole chunk's K/V first and then attends (causality comes from j ≤ p).

use super::kv_cache::KvCache;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// Over the paged KV cache
// ---------------------------------------------------------------------------------------------

/// Where one query token sits: its sequence's block table and its position in the sequence.
#[derive(Clone, Copy)]
pub struct QueryPos<'a> {
    pub table: &'a [u32],
    pub pos: usize,
}

/// `q`: `[tokens, num_heads · head_dim]` (after RoPE); `out`: same shape, overwritten.
pub fn paged_attention(q: &[f32], queries: &[QueryPos], cache: &KvCache, layer: usize, num_heads: usize, out: &mut [f32]) {
    let d = cache.head_dim;
    let group = num_heads / cache.num_kv_heads;
    let scale = 1.0 / (d as f32).sqrt();
    let (kc, vc) = (&cache.k[layer], &cache.v[layer]);
    out.par_chunks_exact_mut(d).enumerate().for_each(|(th, o)| {
        let (t, h) = (th / num_heads, th % num_heads);
        let QueryPos { table, pos } = queries[t];
        let qv = &q[th * d..th * d + d];
        let kv_off = (h / group) * d;
        let mut scores: Vec<f32> = (0..=pos)
            .map(|j| {
                let o = cache.token_offset(table, j) + kv_off;
                kc[o..o + d].iter().zip(qv).map(|(a, b)| a * b).sum::<f32>() * scale
            })
            .collect();
        let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        o.fill(0.0);
        for (j, p) in scores.iter().enumerate() {
            let off = cache.token_offset(table, j) + kv_off;
            let w = p / sum;
            for (acc, v) in o.iter_mut().zip(&vc[off..off + d]) {
                *acc += w * v;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Over packed whole sequences (training: no KV cache), with the row log-sum-exp
// ---------------------------------------------------------------------------------------------

/// The packing of a training batch: sequence `s` occupies rows `starts[s] .. starts[s + 1]`,
/// its tokens at positions 0, 1, … (row − start).
#[derive(Debug, Clone)]
pub struct Packing {
    pub starts: Vec<usize>,
}

impl Packing {
    pub fn from_lens(lens: &[usize]) -> Self {
        let mut starts = vec![0];
        for l in lens {
            starts.push(starts.last().unwrap() + l);
        }
        Packing { starts }
    }
    pub fn total(&self) -> usize {
        *self.starts.last().unwrap()
    }
    pub fn num_seqs(&self) -> usize {
        self.starts.len() - 1
    }
    /// For every row: (first row of its sequence, one past its last row).
    pub fn row_spans(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.total());
        for w in self.starts.windows(2) {
            out.extend(std::iter::repeat_n((w[0], w[1]), w[1] - w[0]));
        }
        out
    }
}

/// Shapes of one attention call: `q`/`out` are `[T, num_heads·d]`, `k`/`v` `[T, num_kv_heads·d]`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

/// Dot product in eight independent lanes (so it vectorises; a plain `sum()` is a serial chain).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n / 8 * 8;
    let mut acc = [0f32; 8];
    for (ca, cb) in a[..full].chunks_exact(8).zip(b[..full].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for i in full..n {
        s += a[i] * b[i];
    }
    s
}

/// Causal attention of every row over the earlier rows of its own sequence, keeping the
/// softmax statistics for the backward:
///   s_ij = q_i·k_j / √d (j ≤ i in the same sequence),  lse_i = log Σ_j e^{s_ij},
///   out_i = Σ_j e^{s_ij − lse_i} v_j.
/// Query head h reads KV head h / (num_heads / num_kv_heads). `lse` is `[T, num_heads]`.
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, out: &mut [f32], lse: &mut [f32]) {
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    let (qd, kvd, group) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    let spans = pack.row_spans();
    out.par_chunks_exact_mut(d).zip(lse.par_iter_mut()).enumerate().for_each(|(th, (o, l))| {
        let (t, h) = (th / nh, th % nh);
        let start = spans[t].0;
        let qv = &q[t * qd + h * d..t * qd + h * d + d];
        let koff = (h / group) * d;
        let mut s: Vec<f32> = (start..=t).map(|j| dot(qv, &k[j * kvd + koff..j * kvd + koff + d]) * scale).collect();
        let max = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for x in s.iter_mut() {
            *x = (*x - max).exp();
            sum += *x;
        }
        o.fill(0.0);
        for (jj, p) in s.iter().enumerate() {
            let j = start + jj;
            let w = p / sum;
            for (acc, vv) in o.iter_mut().zip(&v[j * kvd + koff..j * kvd + koff + d]) {
                *acc += w * vv;
            }
        }
        *l = max + sum.ln();
    });
}

/// Backward of `attention_forward` from the saved `out` and `lse` (flash-attention style, the
/// probabilities are recomputed as P_ij = e^{s_ij − lse_i}):
///   dP_ij = dO_i·v_j,   D_i = dO_i·O_i,   dS_ij = P_ij (dP_ij − D_i),
///   dq_i = Σ_j dS_ij k_j / √d,   dk_j = Σ_{i ≥ j} dS_ij q_i / √d,   dv_j = Σ_{i ≥ j} P_ij dO_i,
/// dk/dv summed over the query heads of the KV group. Two passes (queries, then keys) so each
/// output row is written by one task; dq, dk, dv are overwritten.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dout: &[f32],
    pack: &Packing,
    sh: AttnShape,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    let (qd, kvd, group) = (nh * d, nkv * d, nh / nkv);
    let scale = 1.0 / (d as f32).sqrt();
    let spans = pack.row_spans();
    let t_rows = spans.len();
    // D_i per (row, head).
    let big_d: Vec<f32> = (0..t_rows * nh).into_par_iter().map(|th| dot(&dout[th * d..th * d + d], &out[th * d..th * d + d])).collect();

    dq.par_chunks_exact_mut(d).enumerate().for_each(|(th, dqv)| {
        let (i, h) = (th / nh, th % nh);
        let start = spans[i].0;
        let koff = (h / group) * d;
        let qv = &q[i * qd + h * d..i * qd + h * d + d];
        let dov = &dout[i * qd + h * d..i * qd + h * d + d];
        dqv.fill(0.0);
        for j in start..=i {
            let kj = &k[j * kvd + koff..j * kvd + koff + d];
            let p = (dot(qv, kj) * scale - lse[th]).exp();
            let ds = p * (dot(dov, &v[j * kvd + koff..j * kvd + koff + d]) - big_d[th]);
            for (a, kk) in dqv.iter_mut().zip(kj) {
                *a += ds * scale * kk;
            }
        }
    });

    dk.par_chunks_exact_mut(d).zip(dv.par_chunks_exact_mut(d)).enumerate().for_each(|(jg, (dkv, dvv))| {
        let (j, g) = (jg / nkv, jg % nkv);
        let end = spans[j].1;
        let kj = &k[j * kvd + g * d..j * kvd + g * d + d];
        let vj = &v[j * kvd + g * d..j * kvd + g * d + d];
        dkv.fill(0.0);
        dvv.fill(0.0);
        for h in g * group..(g + 1) * group {
            for i in j..end {
                let th = i * nh + h;
                let qi = &q[i * qd + h * d..i * qd + h * d + d];
                let doi = &dout[i * qd + h * d..i * qd + h * d + d];
                let p = (dot(qi, kj) * scale - lse[th]).exp();
                let ds = p * (dot(doi, vj) - big_d[th]);
                for ((a, b), (qq, dd)) in dkv.iter_mut().zip(dvv.iter_mut()).zip(qi.iter().zip(doi)) {
                    *a += ds * scale * qq;
                    *b += p * dd;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_serial_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-5);
    }
}
