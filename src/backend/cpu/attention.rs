//! Causal grouped-query attention reading K/V from the paged cache: the CPU reference of the
//! prefill and decode attention kernels.
//!
//! For a query token at position p of its sequence and query head h (KV head h / group):
//!   s_j = q·k_j / sqrt(d) for j = 0..=p,   out = Σ_j softmax(s)_j · v_j
//! The token's own K/V must already be in the cache, so prefill of a chunk writes the whole
//! chunk's K/V first and then attends (causality comes from j ≤ p).

use crate::kv::KvCache;
use rayon::prelude::*;

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
