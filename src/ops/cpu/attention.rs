//! Causal grouped-query attention on the CPU, the reference of the attention kernels:
//! - over the paged KV cache (inference: prefill, chunked prefill, decode) — the reference of
//!   kernels/attention_prefill.cu, attention_decode.cu and attention_paged.cu;
//! - over packed whole sequences with the row log-sum-exp, and its backward (training) — the
//!   reference of the packed-sequence kernels of the training-kernels issue.
//!
//! For a query token at position p of its sequence and query head h (KV head g = h / group):
//!   s_j = q·k_j / √d for j = 0..=p,   lse = log Σ_j e^{s_j},   out = Σ_j e^{s_j − lse} · v_j
//! In the paged form the token's own K/V must already be in the cache, so prefill of a chunk
//! writes the whole chunk's K/V first and then attends (causality comes from j ≤ p).
//!
//! # How it is computed (flash-attention style)
//! Work is split into jobs of up to `BQ` query tokens of one sequence × the query heads of one
//! KV head (which share every K/V row). A job walks its keys in tiles of `TILE` (64) and, per
//! micro-block of `MR` (4) rows (a row = one (token, head)), does
//!   S = Q·K_tileᵀ·(1/√d)                         — `scores`: 4 rows × 64 keys in 16 zmm
//!   m' = max(m, max_j S_j),  P = e^{S − m'},  l' = e^{m − m'}·l + Σ_j P_j   (online softmax)
//!   O' = e^{m − m'}·O + P·V_tile                   — `accumulate`: 4 rows × 64 of d in 16 zmm
//! and at the end O/l and lse = m + ln l. Nothing is allocated per row; the O rows accumulate in
//! place in the output. Keys past a row's position are never read into its result (masked
//! scores are dropped, not multiplied by zero), so a NaN in a later token stays out of earlier
//! rows, while a NaN a row does see propagates (it is not lost in a max).
//!
//! `scores` wants K transposed (`[d][keys]`, so a key tile is 4 contiguous zmm per d-index and
//! no horizontal sums are needed): the packed forms transpose K (and for the backward V, Q, dO)
//! once per call, O(T·d) against the O(T²·d) work; the paged form gathers a tile into a
//! transposed scratch when a job has enough rows to share it (prefill), and otherwise (decode,
//! ≤ `MR`·2 rows) takes dot products against the cache rows directly (`scores_rows`).
//!
//! The backward (recomputing P = e^{S/√d − lse}, with the elementwise P and dS step as one
//! more primitive, `grad`) reuses the same two products:
//!   dq pass, per query tile:  S = Q·Kᵀ, dP = dO·Vᵀ, dS = P∘(dP − D)/√d,  dq += dS·K
//!   dk/dv pass, per block of `BQ_KEYS` keys and query tile (i ≥ j), for each query head of
//!   the group:
//!     Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ,  dv += Pᵀ·dO,  dk += dSᵀ·Q
//! Each output row is written by exactly one job in a fixed order, so results do not depend on
//! the thread count. The rows the products stream (V/dO/Q rows, strided among their heads or
//! cache blocks, and the transposed tiles) are software-prefetched two rows ahead: without it
//! the backward spent a third of its time waiting on those loads (17 → 12 ms at T = 512,
//! 1 thread, on a loaded 2-core box).
//!
//! # Napkin roofline
//! Forward: QKᵀ and PV are 2·d FLOPs each per (row, key) pair: 4·d·heads·T(T+1)/2 FLOPs for one
//! causal sequence of T tokens — 302 MFLOP at SmolLM2-135M's T = 512, 9 heads, d = 64. A
//! 4-row × 64-key tile does 4·64·d FMAs from 64·d/16 K loads + 4·d broadcasts, so it is
//! FMA-bound from L1/L2 (the job's K/V: ≤ T·d·4·2 = 256 KiB here). The backward needs 5 such
//! products (2.5× the forward's FLOPs, what the bench credits); this one does 7 (QKᵀ, dO·Vᵀ,
//! dS·K in the dq pass; QKᵀ, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q in the dk/dv pass), trading 2 recomputed
//! products for no atomics and no [T, T] buffer. Decode reads K and V once per KV head:
//! 2·ctx·d·4 bytes, bandwidth- not FLOP-bound; its jobs are (sequence, KV head), split per
//! query head when there would be fewer than 4 jobs per thread (decode of one sequence).
//!
//! The primitives exist as AVX-512 intrinsics and as portable Rust (compiled a second time with
//! AVX2+FMA enabled); `kernels()` picks one by runtime detection, and the tests run them all.

use super::kv_cache::KvCache;
use super::simd;
use rayon::prelude::*;

// ---------------------------------------------------------------------------------------------
// The vector primitives
// ---------------------------------------------------------------------------------------------

/// Keys (or, in the dk/dv pass, queries) per tile: 4 zmm of scores per row.
const TILE: usize = 64;
/// Rows per micro-block: 4 rows × 4 zmm = 16 accumulators, half the AVX-512 register file.
const MR: usize = 4;
/// Query tokens (or keys, in the dk/dv pass) per job: 16 tokens × the group's heads share each
/// K/V tile, and T = 512 still gives 32 × KV-heads jobs to balance over the threads.
const BQ: usize = 16;

/// Keys per job of the dk/dv pass, whose rows are the keys of one KV head (not × the group's
/// heads), so a block twice as long shares each query tile as widely.
const BQ_KEYS: usize = 32;

type Tile = [[f32; TILE]; MR];

/// One instruction set's primitives. Raw pointers because rows come from strided places (the
/// heads of a token, the blocks of a cache); the drivers check every length up front.
struct Kernels {
    /// `s[r][j] = Σ_c a[r][c]·bt[c·ld + j]` for r < rows and every j < TILE: `bt` must be
    /// readable for TILE columns of d rows.
    scores: Scores,
    /// `s[r][j] = a[r]·kr[j]` (d-long rows) for r < rows and j < nk.
    scores_rows: ScoresRows,
    /// `o[r] = alpha[r]·o[r] + Σ_{span[r].0 ≤ j < span[r].1} w[r][j]·x[j]` (d-long rows), r < rows.
    /// Only the x[j] some row's span covers are read.
    accumulate: Accumulate,
    /// One row's online-softmax step over its first `hi` (≥ 1) raw scores: S·scale, then
    /// m' = max(m, max S), P = e^{S − m'} (into s; entries past hi are left undefined),
    /// l = e^{m − m'}·l + Σ P, m = m'; returns the rescale e^{m − m'} of the row's O.
    softmax: Softmax,
    /// The backward's step on a row of raw scores S and dP: P = e^{S·scale − lse_r − lse_c[j]}
    /// into s, dS·scale = P·(dP − D_r − D_c[j])·scale into dp (per-row statistics in the dq
    /// pass, per-column ones in the dk/dv pass; the other pair is zero).
    grad: Grad,
}

type Scores = unsafe fn(a: &[*const f32; MR], rows: usize, bt: *const f32, ld: usize, d: usize, s: &mut Tile);
type ScoresRows = unsafe fn(a: &[*const f32; MR], rows: usize, kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile);
type Accumulate = unsafe fn(o: &[*mut f32; MR], rows: usize, alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize);
type Softmax = unsafe fn(s: &mut [f32; TILE], hi: usize, scale: f32, m: &mut f32, l: &mut f32) -> f32;
type Grad = unsafe fn(s: &mut [f32; TILE], dp: &mut [f32; TILE], scale: f32, lse_r: f32, d_r: f32, lse_c: &[f32; TILE], d_c: &[f32; TILE]);

/// The zero per-column statistics of the dq pass.
static ZERO_TILE: [f32; TILE] = [0.0; TILE];

/// The best primitives this CPU runs.
fn kernels() -> &'static Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return &AVX512;
        }
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return &AVX2;
        }
    }
    &PORTABLE
}

// Portable forms: plain loops over fixed-width rows, which the compiler vectorises (SSE2 here,
// AVX2 in the wrappers below).

#[inline(always)]
unsafe fn scores_portable(a: &[*const f32; MR], rows: usize, bt: *const f32, ld: usize, d: usize, s: &mut Tile) {
    for sr in s.iter_mut().take(rows) {
        *sr = [0.0; TILE];
    }
    for c in 0..d {
        let b = std::slice::from_raw_parts(bt.add(c * ld), TILE);
        for (sr, ar) in s.iter_mut().zip(a).take(rows) {
            let x = *ar.add(c);
            for (acc, &bj) in sr.iter_mut().zip(b) {
                *acc += x * bj;
            }
        }
    }
}

#[inline(always)]
unsafe fn scores_rows_portable(a: &[*const f32; MR], rows: usize, kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile) {
    for (sr, ar) in s.iter_mut().zip(a).take(rows) {
        let ar = std::slice::from_raw_parts(*ar, d);
        for (sj, kj) in sr.iter_mut().zip(kr).take(nk) {
            *sj = dot(ar, std::slice::from_raw_parts(*kj, d));
        }
    }
}

#[inline(always)]
unsafe fn accumulate_portable(o: &[*mut f32; MR], rows: usize, alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize) {
    for r in 0..rows {
        let or = std::slice::from_raw_parts_mut(o[r], d);
        if alpha[r] != 1.0 {
            for v in or.iter_mut() {
                *v *= alpha[r];
            }
        }
        for j in span[r].0..span[r].1 {
            let wj = w[r][j];
            for (ov, &xv) in or.iter_mut().zip(std::slice::from_raw_parts(x[j], d)) {
                *ov += wj * xv;
            }
        }
    }
}

#[inline(always)]
unsafe fn softmax_portable(s: &mut [f32; TILE], hi: usize, scale: f32, m: &mut f32, l: &mut f32) -> f32 {
    // Eight running maxima, so the loop vectorises (one chain is latency-bound).
    let mut mx = [f32::NEG_INFINITY; 8];
    for (i, x) in s[..hi].iter_mut().enumerate() {
        *x *= scale;
        mx[i % 8] = mx[i % 8].max(*x);
    }
    // f32::max skips a NaN score, but that score's e^{NaN − m} makes l (and O) NaN.
    let m_new = mx.iter().fold(*m, |a, &b| a.max(b));
    for x in s.iter_mut() {
        *x -= m_new; // the whole row (it vectorises); entries past hi are never used
    }
    simd::exp_slice(s);
    let alpha = simd::exp(*m - m_new); // 0 on the first tile (m = −∞)
    *l = *l * alpha + sum(&s[..hi]);
    *m = m_new;
    alpha
}

#[inline(always)]
unsafe fn grad_portable(s: &mut [f32; TILE], dp: &mut [f32; TILE], scale: f32, lse_r: f32, d_r: f32, lse_c: &[f32; TILE], d_c: &[f32; TILE]) {
    for (x, &l) in s.iter_mut().zip(lse_c) {
        *x = *x * scale - lse_r - l;
    }
    simd::exp_slice(s);
    for ((g, &p), &dc) in dp.iter_mut().zip(s.iter()).zip(d_c) {
        *g = p * ((*g - d_r - dc) * scale);
    }
}

unsafe fn grad_portable_fn(s: &mut [f32; TILE], dp: &mut [f32; TILE], scale: f32, lse_r: f32, d_r: f32, lse_c: &[f32; TILE], d_c: &[f32; TILE]) {
    grad_portable(s, dp, scale, lse_r, d_r, lse_c, d_c)
}

unsafe fn softmax_portable_fn(s: &mut [f32; TILE], hi: usize, scale: f32, m: &mut f32, l: &mut f32) -> f32 {
    softmax_portable(s, hi, scale, m, l)
}

static PORTABLE: Kernels = Kernels { scores: scores_portable_fn, scores_rows: scores_rows_portable_fn, accumulate: accumulate_portable_fn, softmax: softmax_portable_fn, grad: grad_portable_fn };

unsafe fn scores_portable_fn(a: &[*const f32; MR], rows: usize, bt: *const f32, ld: usize, d: usize, s: &mut Tile) {
    scores_portable(a, rows, bt, ld, d, s)
}
unsafe fn scores_rows_portable_fn(a: &[*const f32; MR], rows: usize, kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile) {
    scores_rows_portable(a, rows, kr, nk, d, s)
}
unsafe fn accumulate_portable_fn(o: &[*mut f32; MR], rows: usize, alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize) {
    accumulate_portable(o, rows, alpha, w, span, x, d)
}

// The portable forms compiled with AVX2+FMA (machines without AVX-512).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores(a: &[*const f32; MR], rows: usize, bt: *const f32, ld: usize, d: usize, s: &mut Tile) {
        scores_portable(a, rows, bt, ld, d, s)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_rows(a: &[*const f32; MR], rows: usize, kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile) {
        scores_rows_portable(a, rows, kr, nk, d, s)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn accumulate(o: &[*mut f32; MR], rows: usize, alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize) {
        accumulate_portable(o, rows, alpha, w, span, x, d)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax(s: &mut [f32; TILE], hi: usize, scale: f32, m: &mut f32, l: &mut f32) -> f32 {
        softmax_portable(s, hi, scale, m, l)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn grad(s: &mut [f32; TILE], dp: &mut [f32; TILE], scale: f32, lse_r: f32, d_r: f32, lse_c: &[f32; TILE], d_c: &[f32; TILE]) {
        grad_portable(s, dp, scale, lse_r, d_r, lse_c, d_c)
    }
}

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels { scores: avx2::scores, scores_rows: avx2::scores_rows, accumulate: avx2::accumulate, softmax: avx2::softmax, grad: avx2::grad };

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels { scores: avx512::scores, scores_rows: avx512::scores_rows, accumulate: avx512::accumulate, softmax: avx512::softmax, grad: avx512::grad };

/// AVX-512 intrinsics: the row count is a const generic so the 4·R accumulators are registers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Lanes of the 4 zmm covering d-elements base..base+64 that lie below d.
    #[inline(always)]
    fn masks(d: usize, base: usize) -> [__mmask16; 4] {
        std::array::from_fn(|z| {
            let n = d.saturating_sub(base + 16 * z).min(16);
            ((1u32 << n) - 1) as __mmask16
        })
    }

    /// Prefetches the cache lines of `n` (≤ 64) floats at p into L1.
    #[inline(always)]
    fn prefetch(p: *const f32, n: usize) {
        for z in 0..n.min(64).div_ceil(16) {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(16 * z) as *const i8) };
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores(a: &[*const f32; MR], rows: usize, bt: *const f32, ld: usize, d: usize, s: &mut Tile) {
        match rows {
            1 => scores_r::<1>(a, bt, ld, d, s),
            2 => scores_r::<2>(a, bt, ld, d, s),
            3 => scores_r::<3>(a, bt, ld, d, s),
            _ => scores_r::<4>(a, bt, ld, d, s),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn scores_r<const R: usize>(a: &[*const f32; MR], bt: *const f32, ld: usize, d: usize, s: &mut Tile) {
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for c in 0..d {
            let p = bt.add(c * ld);
            if c + 2 < d {
                prefetch(p.wrapping_add(2 * ld), TILE);
            }
            let b = [_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)), _mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48))];
            for r in 0..R {
                let x = _mm512_set1_ps(*a[r].add(c));
                for z in 0..4 {
                    acc[r][z] = _mm512_fmadd_ps(x, b[z], acc[r][z]);
                }
            }
        }
        for (sr, ar) in s.iter_mut().zip(&acc) {
            for (z, &a) in ar.iter().enumerate() {
                _mm512_storeu_ps(sr.as_mut_ptr().add(16 * z), a);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_rows(a: &[*const f32; MR], rows: usize, kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile) {
        match rows {
            1 => scores_rows_r::<1>(a, kr, nk, d, s),
            2 => scores_rows_r::<2>(a, kr, nk, d, s),
            3 => scores_rows_r::<3>(a, kr, nk, d, s),
            _ => scores_rows_r::<4>(a, kr, nk, d, s),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn scores_rows_r<const R: usize>(a: &[*const f32; MR], kr: &[*const f32; TILE], nk: usize, d: usize, s: &mut Tile) {
        for (j, &k) in kr.iter().enumerate().take(nk) {
            let mut acc = [_mm512_setzero_ps(); R];
            let mut c = 0;
            while c < d {
                let m = masks(d, c)[0];
                let kv = _mm512_maskz_loadu_ps(m, k.wrapping_add(c));
                for r in 0..R {
                    acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a[r].wrapping_add(c)), kv, acc[r]);
                }
                c += 16;
            }
            for r in 0..R {
                s[r][j] = _mm512_reduce_add_ps(acc[r]);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn accumulate(o: &[*mut f32; MR], rows: usize, alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize) {
        match rows {
            1 => accumulate_r::<1>(o, alpha, w, span, x, d),
            2 => accumulate_r::<2>(o, alpha, w, span, x, d),
            3 => accumulate_r::<3>(o, alpha, w, span, x, d),
            _ => accumulate_r::<4>(o, alpha, w, span, x, d),
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_r<const R: usize>(o: &[*mut f32; MR], alpha: &[f32; MR], w: &Tile, span: &[(usize, usize); MR], x: &[*const f32; TILE], d: usize) {
        // Keys every row takes ([lo_all, hi_all)) run without per-row tests; the rest of
        // [lo_any, hi_any) (the diagonal of a causal tile) test each row.
        let sp = &span[..R];
        let (lo_any, hi_any) = (sp.iter().map(|s| s.0).min().unwrap(), sp.iter().map(|s| s.1).max().unwrap());
        let (lo_all, hi_all) = (sp.iter().map(|s| s.0).max().unwrap(), sp.iter().map(|s| s.1).min().unwrap());
        let mut base = 0;
        while base < d {
            let m = masks(d, base);
            let mut acc = [[_mm512_setzero_ps(); 4]; R];
            for r in 0..R {
                let a = _mm512_set1_ps(alpha[r]);
                for z in 0..4 {
                    acc[r][z] = _mm512_mul_ps(a, _mm512_maskz_loadu_ps(m[z], o[r].wrapping_add(base + 16 * z)));
                }
            }
            for j in lo_any..hi_any {
                // The x rows are strided (a token's row among its heads, or a cache block's):
                // fetch two rows ahead, the hardware prefetcher does not follow them.
                if j + 2 < hi_any {
                    prefetch(x[j + 2].wrapping_add(base), d - base);
                }
                let p = x[j];
                let xv: [__m512; 4] = std::array::from_fn(|z| _mm512_maskz_loadu_ps(m[z], p.wrapping_add(base + 16 * z)));
                let all = j >= lo_all && j < hi_all;
                for r in 0..R {
                    if all || (j >= sp[r].0 && j < sp[r].1) {
                        let wv = _mm512_set1_ps(w[r][j]);
                        for z in 0..4 {
                            acc[r][z] = _mm512_fmadd_ps(wv, xv[z], acc[r][z]);
                        }
                    }
                }
            }
            for r in 0..R {
                for z in 0..4 {
                    _mm512_mask_storeu_ps(o[r].wrapping_add(base + 16 * z), m[z], acc[r][z]);
                }
            }
            base += 64;
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax(s: &mut [f32; TILE], hi: usize, scale: f32, m: &mut f32, l: &mut f32) -> f32 {
        let mk = masks(hi, 0);
        let p = s.as_mut_ptr();
        let v: [__m512; 4] = std::array::from_fn(|z| _mm512_mul_ps(_mm512_loadu_ps(p.add(16 * z)), _mm512_set1_ps(scale)));
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for z in 0..4 {
            mx = _mm512_mask_max_ps(mx, mk[z], mx, v[z]);
        }
        // A NaN score may or may not survive the max; either way its e^{NaN − m} makes l NaN.
        let m_new = m.max(_mm512_reduce_max_ps(mx));
        let mut acc = _mm512_setzero_ps();
        for z in 0..4 {
            let e = simd::exp_avx512(_mm512_sub_ps(v[z], _mm512_set1_ps(m_new)));
            _mm512_storeu_ps(p.add(16 * z), e);
            acc = _mm512_mask_add_ps(acc, mk[z], acc, e);
        }
        let alpha = simd::exp(*m - m_new); // 0 on the first tile (m = −∞)
        *l = *l * alpha + _mm512_reduce_add_ps(acc);
        *m = m_new;
        alpha
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn grad(s: &mut [f32; TILE], dp: &mut [f32; TILE], scale: f32, lse_r: f32, d_r: f32, lse_c: &[f32; TILE], d_c: &[f32; TILE]) {
        let (sc, lr, dr) = (_mm512_set1_ps(scale), _mm512_set1_ps(lse_r), _mm512_set1_ps(d_r));
        for z in 0..4 {
            let o = 16 * z;
            let x = _mm512_sub_ps(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s.as_ptr().add(o)), sc), lr), _mm512_loadu_ps(lse_c.as_ptr().add(o)));
            let p = simd::exp_avx512(x);
            _mm512_storeu_ps(s.as_mut_ptr().add(o), p);
            let g = _mm512_sub_ps(_mm512_sub_ps(_mm512_loadu_ps(dp.as_ptr().add(o)), dr), _mm512_loadu_ps(d_c.as_ptr().add(o)));
            _mm512_storeu_ps(dp.as_mut_ptr().add(o), _mm512_mul_ps(p, _mm512_mul_ps(g, sc)));
        }
    }
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

/// Sum in eight lanes (vectorises).
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let full = a.len() / 8 * 8;
    let mut acc = [0f32; 8];
    for c in a[..full].chunks_exact(8) {
        for l in 0..8 {
            acc[l] += c[l];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for x in &a[full..] {
        s += x;
    }
    s
}

/// `x` (`[t, heads·d]`) as `[heads][d][ld]` (ld ≥ t + TILE, the tail zero) so that a tile of
/// TILE tokens starting anywhere below t is readable by `scores`.
/// Blocked: a job takes 16 columns of x (16 output rows), and reads them 64 tokens at a time,
/// so reads are 64-byte runs and the 16 rows being written stay in L1 (a column at a time
/// re-read every line of x 16 times from L2: 2 ms per [512, 576] on this box).
fn transpose_heads(x: &[f32], t: usize, heads: usize, d: usize, ld: usize) -> Vec<f32> {
    const CB: usize = 16;
    let w = heads * d;
    let mut out = vec![0f32; w * ld];
    out.par_chunks_mut(ld * CB).enumerate().for_each(|(cb, rows)| {
        let c0 = cb * CB;
        let nc = CB.min(w - c0);
        for i0 in (0..t).step_by(TILE) {
            for i in i0..(i0 + TILE).min(t) {
                for (c, &val) in x[i * w + c0..i * w + c0 + nc].iter().enumerate() {
                    rows[c * ld + i] = val;
                }
            }
        }
    });
    out
}

/// A pointer that jobs share, each writing rows no other job writes (see the callers).
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

impl SharedMut {
    /// The element `off` places in (a method, so closures capture the Sync wrapper, not the
    /// raw pointer field).
    fn at(&self, off: usize) -> *mut f32 {
        self.0.wrapping_add(off)
    }
}
// SAFETY: only used to write disjoint rows from different jobs.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

// ---------------------------------------------------------------------------------------------
// The forward driver, shared by the paged and the packed forms
// ---------------------------------------------------------------------------------------------

/// One (query token, query head) of a job, with its online-softmax state.
struct Row {
    q: *const f32,
    /// The output row: zeroed, accumulated in place, divided by l at the end.
    o: *mut f32,
    /// Where lse goes (null: not wanted).
    lse: *mut f32,
    /// The row attends to the job's keys 0..keys.
    keys: usize,
    m: f32,
    l: f32,
}

/// A job's keys: 0.. of its sequence, for one KV head.
enum Keys<'a> {
    /// K already transposed (`kt[c·ld + j]`), V row j at `v + j·stride`.
    Transposed { kt: *const f32, ld: usize, v: *const f32, stride: usize },
    /// The paged cache; `gather`: transpose each tile into a scratch (worth it for many rows),
    /// otherwise dot products against the cache rows.
    Paged { cache: &'a KvCache, layer: usize, table: &'a [u32], g: usize, gather: bool },
}

/// How a tile's K came: transposed (pointer, leading dimension), or as row pointers in the
/// caller's `k` array.
enum KTile {
    Transposed(*const f32, usize),
    Rows,
}

impl Keys<'_> {
    /// Keys j0..j0+nk: K (transposed, or as row pointers into `k`) and the V row pointers
    /// into `v`.
    fn tile(&self, j0: usize, nk: usize, scratch: &mut [f32], k: &mut [*const f32; TILE], v: &mut [*const f32; TILE]) -> KTile {
        match *self {
            Keys::Transposed { kt, ld, v: vb, stride } => {
                for (j, p) in v.iter_mut().enumerate().take(nk) {
                    *p = vb.wrapping_add((j0 + j) * stride);
                }
                KTile::Transposed(kt.wrapping_add(j0), ld)
            }
            Keys::Paged { cache, layer, table, g, gather } => {
                let d = cache.head_dim;
                let (kc, vc) = (&cache.k[layer], &cache.v[layer]);
                for j in 0..nk {
                    let off = cache.token_offset(table, j0 + j) + g * d;
                    v[j] = vc[off..off + d].as_ptr();
                    k[j] = kc[off..off + d].as_ptr();
                    if gather {
                        for (c, &x) in kc[off..off + d].iter().enumerate() {
                            scratch[c * TILE + j] = x;
                        }
                    }
                }
                if gather {
                    KTile::Transposed(scratch.as_ptr(), TILE)
                } else {
                    KTile::Rows
                }
            }
        }
    }
}

/// Attention of `rows` (all over the same keys, KV head) — see the module doc for the math.
fn forward_job(kern: &Kernels, rows: &mut [Row], keys: &Keys, d: usize, scale: f32, scratch: &mut [f32]) {
    for row in rows.iter_mut() {
        // SAFETY: the caller hands each row's d-long output to this job alone.
        unsafe { std::ptr::write_bytes(row.o, 0, d) };
        (row.m, row.l) = (f32::NEG_INFINITY, 0.0);
    }
    let max_keys = rows.iter().map(|r| r.keys).max().unwrap_or(0);
    let mut s: Tile = [[0.0; TILE]; MR];
    let (mut k, mut v) = ([std::ptr::null(); TILE], [std::ptr::null(); TILE]);
    for j0 in (0..max_keys).step_by(TILE) {
        let nk = TILE.min(max_keys - j0);
        let kt = keys.tile(j0, nk, scratch, &mut k, &mut v);
        for mb in rows.chunks_mut(MR) {
            let n = mb.len();
            let span: [(usize, usize); MR] = std::array::from_fn(|r| (0, mb.get(r).map_or(0, |row| row.keys.saturating_sub(j0).min(nk))));
            if span.iter().all(|s| s.1 == 0) {
                continue;
            }
            let q: [*const f32; MR] = std::array::from_fn(|r| mb[r.min(n - 1)].q);
            let o: [*mut f32; MR] = std::array::from_fn(|r| mb[r.min(n - 1)].o);
            // SAFETY: q rows are d long; the tile is readable as `Keys::tile` promises.
            unsafe {
                match &kt {
                    KTile::Transposed(bt, ld) => (kern.scores)(&q, n, *bt, *ld, d, &mut s),
                    KTile::Rows => (kern.scores_rows)(&q, n, &k, nk, d, &mut s),
                }
            }
            let mut alpha = [1.0f32; MR];
            for (r, row) in mb.iter_mut().enumerate() {
                let hi = span[r].1;
                if hi == 0 {
                    continue; // alpha 1, empty span: the row is left as it is
                }
                // SAFETY: the kernels were chosen for this CPU.
                alpha[r] = unsafe { (kern.softmax)(&mut s[r], hi, scale, &mut row.m, &mut row.l) };
            }
            // SAFETY: o rows are this job's; v holds the tile's nk rows and spans end ≤ nk.
            unsafe { (kern.accumulate)(&o, n, &alpha, &s, &span, &v, d) };
        }
    }
    for row in rows.iter() {
        // SAFETY: as above.
        let o = unsafe { std::slice::from_raw_parts_mut(row.o, d) };
        let inv = 1.0 / row.l;
        for x in o.iter_mut() {
            *x *= inv;
        }
        if !row.lse.is_null() {
            unsafe { *row.lse = row.m + row.l.ln() };
        }
    }
}

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
    paged_attention_with(kernels(), q, queries, cache, layer, num_heads, out)
}

fn paged_attention_with(kern: &Kernels, q: &[f32], queries: &[QueryPos], cache: &KvCache, layer: usize, nh: usize, out: &mut [f32]) {
    let (d, nkv) = (cache.head_dim, cache.num_kv_heads);
    let (group, qd) = (nh / nkv, nh * d);
    assert!(q.len() == queries.len() * qd && out.len() == q.len(), "paged attention: q/out are not [{}, {qd}]", queries.len());
    for qp in queries {
        assert!(qp.table.len() * cache.block_size > qp.pos, "paged attention: position {} past the block table", qp.pos);
    }
    let scale = 1.0 / (d as f32).sqrt();
    // Segments: runs of queries of one sequence (same block table), at most BQ tokens.
    let mut segs = Vec::new();
    let mut s0 = 0;
    for (t, qp) in queries.iter().enumerate().skip(1) {
        if t - s0 == BQ || !std::ptr::eq(qp.table, queries[s0].table) {
            segs.push((s0, t));
            s0 = t;
        }
    }
    if !queries.is_empty() {
        segs.push((s0, queries.len()));
    }
    // Jobs: segment × KV head, or × query head when that would leave threads idle (decode of
    // one or two sequences); the heads of a group share the tile reads only in the former.
    let per_head = segs.len() * nkv < 4 * rayon::current_num_threads() && group > 1;
    let heads_per_job = if per_head { 1 } else { group };
    let jobs: Vec<(usize, usize, usize)> = segs.iter().flat_map(|&(a, b)| (0..nh / heads_per_job).map(move |hj| (a, b, hj * heads_per_job))).collect();
    let outp = SharedMut(out.as_mut_ptr());
    jobs.par_iter().for_each(|&(t0, t1, h0)| {
        let g = h0 / group;
        let mut rows = Vec::with_capacity((t1 - t0) * heads_per_job);
        for (t, qp) in queries.iter().enumerate().take(t1).skip(t0) {
            for h in h0..h0 + heads_per_job {
                let at = t * qd + h * d;
                // Each (token, head) is in one job: these output rows are disjoint.
                rows.push(Row { q: q[at..at + d].as_ptr(), o: outp.at(at), lse: std::ptr::null_mut(), keys: qp.pos + 1, m: 0.0, l: 0.0 });
            }
        }
        let gather = rows.len() > 2 * MR;
        let mut scratch = if gather { vec![0f32; d * TILE] } else { Vec::new() };
        let keys = Keys::Paged { cache, layer, table: queries[t0].table, g, gather };
        forward_job(kern, &mut rows, &keys, d, scale, &mut scratch);
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

/// Jobs of a packing: (sequence start, sequence end, first row, end row) for blocks of BQ rows,
/// the longest-running (latest in their sequence) first so the threads finish together.
fn row_blocks(pack: &Packing, block: usize, late_first: bool) -> Vec<(usize, usize, usize, usize)> {
    let mut jobs = Vec::new();
    for w in pack.starts.windows(2) {
        for i0 in (w[0]..w[1]).step_by(block) {
            jobs.push((w[0], w[1], i0, (i0 + block).min(w[1])));
        }
    }
    // Forward/dq work grows with i0 − start; dk/dv work with end − i0.
    if late_first {
        jobs.sort_by_key(|&(a, _, i0, _)| std::cmp::Reverse(i0 - a));
    } else {
        jobs.sort_by_key(|&(_, b, i0, _)| std::cmp::Reverse(b - i0));
    }
    jobs
}

fn check_packed(q: usize, k: usize, v: usize, pack: &Packing, sh: AttnShape) {
    let t = pack.total();
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    assert!(nkv > 0 && nh % nkv == 0, "attention: {nh} heads over {nkv} KV heads");
    assert!(q == t * nh * d && k == t * nkv * d && v == k, "attention: q/k/v are not [{t}, heads·{d}]");
}

/// Causal attention of every row over the earlier rows of its own sequence, keeping the
/// softmax statistics for the backward:
///   s_ij = q_i·k_j / √d (j ≤ i in the same sequence),  lse_i = log Σ_j e^{s_ij},
///   out_i = Σ_j e^{s_ij − lse_i} v_j.
/// Query head h reads KV head h / (num_heads / num_kv_heads). `lse` is `[T, num_heads]`.
pub fn attention_forward(q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, out: &mut [f32], lse: &mut [f32]) {
    attention_forward_with(kernels(), q, k, v, pack, sh, out, lse)
}

#[allow(clippy::too_many_arguments)]
fn attention_forward_with(kern: &Kernels, q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, out: &mut [f32], lse: &mut [f32]) {
    check_packed(q.len(), k.len(), v.len(), pack, sh);
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    assert!(out.len() == q.len() && lse.len() == pack.total() * nh, "attention: out/lse shapes");
    let (qd, kvd, group, t) = (nh * d, nkv * d, nh / nkv, pack.total());
    let scale = 1.0 / (d as f32).sqrt();
    let ld = t + TILE;
    let kt = transpose_heads(k, t, nkv, d, ld);
    let jobs: Vec<_> = row_blocks(pack, BQ, true).into_iter().flat_map(|b| (0..nkv).map(move |g| (b, g))).collect();
    let (outp, lsep) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    jobs.par_iter().for_each(|&((a, _, i0, i1), g)| {
        let mut rows = Vec::with_capacity((i1 - i0) * group);
        for i in i0..i1 {
            for h in g * group..(g + 1) * group {
                let at = i * qd + h * d;
                // Rows (i, h) with i in this block and h in this group: no other job's.
                rows.push(Row { q: q[at..at + d].as_ptr(), o: outp.at(at), lse: lsep.at(i * nh + h), keys: i - a + 1, m: 0.0, l: 0.0 });
            }
        }
        let keys = Keys::Transposed { kt: kt[g * d * ld + a..].as_ptr(), ld, v: v[a * kvd + g * d..].as_ptr(), stride: kvd };
        forward_job(kern, &mut rows, &keys, d, scale, &mut []);
    });
}

/// Backward of `attention_forward` from the saved `out` and `lse` (flash-attention style, the
/// probabilities are recomputed as P_ij = e^{s_ij − lse_i}):
///   dP_ij = dO_i·v_j,   D_i = dO_i·O_i,   dS_ij = P_ij (dP_ij − D_i),
///   dq_i = Σ_j dS_ij k_j / √d,   dk_j = Σ_{i ≥ j} dS_ij q_i / √d,   dv_j = Σ_{i ≥ j} P_ij dO_i,
/// dk/dv summed over the query heads of the KV group. Two passes (queries, then keys) so each
/// output row is written by one job; dq, dk, dv are overwritten.
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
    attention_backward_with(kernels(), q, k, v, out, lse, dout, pack, sh, dq, dk, dv)
}

#[allow(clippy::too_many_arguments)]
fn attention_backward_with(
    kern: &Kernels,
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
    check_packed(q.len(), k.len(), v.len(), pack, sh);
    let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
    let (qd, kvd, group, t) = (nh * d, nkv * d, nh / nkv, pack.total());
    assert!(out.len() == q.len() && dout.len() == q.len() && dq.len() == q.len(), "attention backward: out/dout/dq shapes");
    assert!(dk.len() == k.len() && dv.len() == k.len() && lse.len() == t * nh, "attention backward: dk/dv/lse shapes");
    let scale = 1.0 / (d as f32).sqrt();
    // D_i per (row, head).
    let big_d: Vec<f32> = (0..t * nh).into_par_iter().map(|th| dot(&dout[th * d..th * d + d], &out[th * d..th * d + d])).collect();
    let ld = t + TILE;
    let (kt, vt) = (transpose_heads(k, t, nkv, d, ld), transpose_heads(v, t, nkv, d, ld));
    let (qt, dot_) = (transpose_heads(q, t, nh, d, ld), transpose_heads(dout, t, nh, d, ld));

    // dq pass: jobs of BQ query tokens × the query heads of one KV head, walking key tiles.
    let jobs: Vec<_> = row_blocks(pack, BQ, true).into_iter().flat_map(|b| (0..nkv).map(move |g| (b, g))).collect();
    let dqp = SharedMut(dq.as_mut_ptr());
    jobs.par_iter().for_each(|&((a, _, i0, i1), g)| {
        // (query row, dO row, dq row, lse, D, keys) per (token, head) of the job.
        let mut rows = Vec::with_capacity((i1 - i0) * group);
        for i in i0..i1 {
            for h in g * group..(g + 1) * group {
                let (at, th) = (i * qd + h * d, i * nh + h);
                // SAFETY: (i, h) belongs to this job alone.
                unsafe { std::ptr::write_bytes(dqp.at(at), 0, d) };
                rows.push((q[at..].as_ptr(), dout[at..].as_ptr(), dqp.at(at), lse[th], big_d[th], i - a + 1));
            }
        }
        let max_keys = i1 - a;
        let (kt_g, vt_g) = (&kt[g * d * ld + a..], &vt[g * d * ld + a..]);
        let (mut s, mut dp): (Tile, Tile) = ([[0.0; TILE]; MR], [[0.0; TILE]; MR]);
        let mut krows = [std::ptr::null(); TILE];
        for j0 in (0..max_keys).step_by(TILE) {
            let nk = TILE.min(max_keys - j0);
            for (j, p) in krows.iter_mut().enumerate().take(nk) {
                *p = k[(a + j0 + j) * kvd + g * d..].as_ptr();
            }
            for mb in rows.chunks(MR) {
                let n = mb.len();
                let span: [(usize, usize); MR] = std::array::from_fn(|r| (0, mb.get(r).map_or(0, |row| row.5.saturating_sub(j0).min(nk))));
                if span.iter().all(|s| s.1 == 0) {
                    continue;
                }
                let qr: [*const f32; MR] = std::array::from_fn(|r| mb[r.min(n - 1)].0);
                let dor: [*const f32; MR] = std::array::from_fn(|r| mb[r.min(n - 1)].1);
                let o: [*mut f32; MR] = std::array::from_fn(|r| mb[r.min(n - 1)].2);
                // SAFETY: rows are d long, the transposed buffers padded by TILE columns.
                unsafe {
                    (kern.scores)(&qr, n, kt_g[j0..].as_ptr(), ld, d, &mut s);
                    (kern.scores)(&dor, n, vt_g[j0..].as_ptr(), ld, d, &mut dp);
                }
                for r in 0..n {
                    // P into s, dS/√d into dp (entries past the span are never read).
                    unsafe { (kern.grad)(&mut s[r], &mut dp[r], scale, mb[r].3, mb[r].4, &ZERO_TILE, &ZERO_TILE) };
                }
                // SAFETY: dq rows are this job's; spans end ≤ nk.
                unsafe { (kern.accumulate)(&o, n, &[1.0; MR], &dp, &span, &krows, d) };
            }
        }
    });

    // dk/dv pass: jobs of BQ keys of one KV head, walking the query tiles after them for each
    // query head of the group.
    let jobs: Vec<_> = row_blocks(pack, BQ_KEYS, false).into_iter().flat_map(|b| (0..nkv).map(move |g| (b, g))).collect();
    let (dkp, dvp) = (SharedMut(dk.as_mut_ptr()), SharedMut(dv.as_mut_ptr()));
    jobs.par_iter().for_each(|&((_, b, j0, j1), g)| {
        let nrows = j1 - j0;
        let kr: Vec<*const f32> = (j0..j1).map(|j| k[j * kvd + g * d..].as_ptr()).collect();
        let vr: Vec<*const f32> = (j0..j1).map(|j| v[j * kvd + g * d..].as_ptr()).collect();
        let dkr: Vec<*mut f32> = (j0..j1).map(|j| dkp.at(j * kvd + g * d)).collect();
        let dvr: Vec<*mut f32> = (j0..j1).map(|j| dvp.at(j * kvd + g * d)).collect();
        for (&a, &bb) in dkr.iter().zip(&dvr) {
            // SAFETY: key rows (j, g) with j in this block belong to this job alone.
            unsafe {
                std::ptr::write_bytes(a, 0, d);
                std::ptr::write_bytes(bb, 0, d);
            }
        }
        let (mut s, mut dp): (Tile, Tile) = ([[0.0; TILE]; MR], [[0.0; TILE]; MR]);
        let (mut qrows, mut dorows) = ([std::ptr::null(); TILE], [std::ptr::null(); TILE]);
        let (mut lse_c, mut d_c) = ([0f32; TILE], [0f32; TILE]);
        for h in g * group..(g + 1) * group {
            let (qt_h, dot_h) = (&qt[h * d * ld..], &dot_[h * d * ld..]);
            for i0 in (j0..b).step_by(TILE) {
                let ni = TILE.min(b - i0);
                for c in 0..ni {
                    let (i, th) = (i0 + c, (i0 + c) * nh + h);
                    qrows[c] = q[i * qd + h * d..].as_ptr();
                    dorows[c] = dout[i * qd + h * d..].as_ptr();
                    (lse_c[c], d_c[c]) = (lse[th], big_d[th]);
                }
                for r0 in (0..nrows).step_by(MR) {
                    let n = MR.min(nrows - r0);
                    // Key j takes the queries i ≥ j (tile columns from j − i0) of its sequence.
                    let span: [(usize, usize); MR] = std::array::from_fn(|r| if r < n { ((j0 + r0 + r).saturating_sub(i0).min(ni), ni) } else { (0, 0) });
                    if span.iter().all(|s| s.0 >= s.1) {
                        continue;
                    }
                    let sel = |p: &[*const f32]| -> [*const f32; MR] { std::array::from_fn(|r| p[r0 + r.min(n - 1)]) };
                    let selm = |p: &[*mut f32]| -> [*mut f32; MR] { std::array::from_fn(|r| p[r0 + r.min(n - 1)]) };
                    // SAFETY: as in the dq pass.
                    unsafe {
                        (kern.scores)(&sel(&kr), n, qt_h[i0..].as_ptr(), ld, d, &mut s);
                        (kern.scores)(&sel(&vr), n, dot_h[i0..].as_ptr(), ld, d, &mut dp);
                    }
                    for r in 0..n {
                        // Pᵀ into s, dSᵀ/√d into dp.
                        unsafe { (kern.grad)(&mut s[r], &mut dp[r], scale, 0.0, 0.0, &lse_c, &d_c) };
                    }
                    // SAFETY: dk/dv rows are this job's; spans end ≤ ni.
                    unsafe {
                        (kern.accumulate)(&selm(&dvr), n, &[1.0; MR], &s, &span, &dorows, d);
                        (kern.accumulate)(&selm(&dkr), n, &[1.0; MR], &dp, &span, &qrows, d);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(n: usize, seed: u64, amp: f32) -> Vec<f32> {
        crate::util::rng::symmetric_values(n, seed, amp)
    }

    /// Every primitive set this CPU runs, by name.
    fn all_kernels() -> Vec<(&'static str, &'static Kernels)> {
        let mut ks = vec![("portable", &PORTABLE)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                ks.push(("avx2", &AVX2));
            }
            if std::is_x86_feature_detected!("avx512f") {
                ks.push(("avx512", &AVX512));
            }
        }
        ks
    }

    /// Shapes the fixtures and SmolLM2 use: GQA groups 1 and 3, head_dim 64 and odd ones.
    const SHAPES: [AttnShape; 4] = [
        AttnShape { num_heads: 2, num_kv_heads: 2, head_dim: 64 },
        AttnShape { num_heads: 3, num_kv_heads: 1, head_dim: 64 },
        AttnShape { num_heads: 6, num_kv_heads: 2, head_dim: 12 },
        AttnShape { num_heads: 3, num_kv_heads: 3, head_dim: 16 },
    ];
    /// Ragged: length 1, tile edges crossed, more than two tiles.
    const LENS: [usize; 6] = [1, 5, 70, 1, 130, 17];

    /// Straightforward f64 forward: (out, lse).
    fn ref_forward(q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape) -> (Vec<f64>, Vec<f64>) {
        let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
        let (qd, kvd, group, t) = (nh * d, nkv * d, nh / nkv, pack.total());
        let (mut out, mut lse) = (vec![0f64; t * qd], vec![0f64; t * nh]);
        for (i, &(a, _)) in pack.row_spans().iter().enumerate() {
            for h in 0..nh {
                let g = h / group;
                let s: Vec<f64> = (a..=i).map(|j| (0..d).map(|c| q[i * qd + h * d + c] as f64 * k[j * kvd + g * d + c] as f64).sum::<f64>() / (d as f64).sqrt()).collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                lse[i * nh + h] = m + z.ln();
                for (jj, x) in s.iter().enumerate() {
                    let p = (x - m).exp() / z;
                    for c in 0..d {
                        out[i * qd + h * d + c] += p * v[(a + jj) * kvd + g * d + c] as f64;
                    }
                }
            }
        }
        (out, lse)
    }

    /// Straightforward f64 backward: (dq, dk, dv).
    #[allow(clippy::type_complexity)]
    fn ref_backward(q: &[f32], k: &[f32], v: &[f32], dout: &[f32], pack: &Packing, sh: AttnShape) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let AttnShape { num_heads: nh, num_kv_heads: nkv, head_dim: d } = sh;
        let (qd, kvd, group, t) = (nh * d, nkv * d, nh / nkv, pack.total());
        let (out, lse) = ref_forward(q, k, v, pack, sh);
        let (mut dq, mut dk, mut dv) = (vec![0f64; t * qd], vec![0f64; t * kvd], vec![0f64; t * kvd]);
        let sc = 1.0 / (d as f64).sqrt();
        for (i, &(a, _)) in pack.row_spans().iter().enumerate() {
            for h in 0..nh {
                let (g, qi) = (h / group, i * qd + h * d);
                let big_d: f64 = (0..d).map(|c| dout[qi + c] as f64 * out[qi + c]).sum();
                for j in a..=i {
                    let kj = j * kvd + g * d;
                    let s: f64 = (0..d).map(|c| q[qi + c] as f64 * k[kj + c] as f64).sum::<f64>() * sc;
                    let p = (s - lse[i * nh + h]).exp();
                    let dp: f64 = (0..d).map(|c| dout[qi + c] as f64 * v[kj + c] as f64).sum();
                    let ds = p * (dp - big_d);
                    for c in 0..d {
                        dq[qi + c] += ds * sc * k[kj + c] as f64;
                        dk[kj + c] += ds * sc * q[qi + c] as f64;
                        dv[kj + c] += p * dout[qi + c] as f64;
                    }
                }
            }
        }
        (dq, dk, dv)
    }

    /// Largest |got − want| / (1 + |want|), and panics on a NaN.
    fn err(got: &[f32], want: &[f64], what: &str) -> f64 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(&g, &w)| {
                assert!(g.is_finite(), "{what}: {g} where {w} was expected");
                (g as f64 - w).abs() / (1.0 + w.abs())
            })
            .fold(0.0, f64::max)
    }

    #[test]
    fn dot_matches_serial_sum() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn packed_forward_and_backward_match_f64_on_ragged_packings() {
        let pack = Packing::from_lens(&LENS);
        let t = pack.total();
        for (si, &sh) in SHAPES.iter().enumerate() {
            let (qd, kvd) = (sh.num_heads * sh.head_dim, sh.num_kv_heads * sh.head_dim);
            // Amplitude 2: scores of a few units, so the softmax is far from uniform.
            let (q, k, v) = (random(t * qd, 1 + si as u64, 2.0), random(t * kvd, 11 + si as u64, 2.0), random(t * kvd, 21 + si as u64, 1.0));
            let dout = random(t * qd, 31 + si as u64, 1.0);
            let (ro, rl) = ref_forward(&q, &k, &v, &pack, sh);
            let (rdq, rdk, rdv) = ref_backward(&q, &k, &v, &dout, &pack, sh);
            for (name, kern) in all_kernels() {
                // Poisoned outputs: every element must be written.
                let (mut out, mut lse) = (vec![f32::NAN; t * qd], vec![f32::NAN; t * sh.num_heads]);
                attention_forward_with(kern, &q, &k, &v, &pack, sh, &mut out, &mut lse);
                let (eo, el) = (err(&out, &ro, "out"), err(&lse, &rl, "lse"));
                let (mut dq, mut dk, mut dv) = (vec![f32::NAN; t * qd], vec![f32::NAN; t * kvd], vec![f32::NAN; t * kvd]);
                attention_backward_with(kern, &q, &k, &v, &out, &lse, &dout, &pack, sh, &mut dq, &mut dk, &mut dv);
                let (edq, edk, edv) = (err(&dq, &rdq, "dq"), err(&dk, &rdk, "dk"), err(&dv, &rdv, "dv"));
                eprintln!("{name} {sh:?}: out {eo:.1e} lse {el:.1e} dq {edq:.1e} dk {edk:.1e} dv {edv:.1e}");
                assert!(eo < 2e-6 && el < 2e-6, "{name} {sh:?}: forward off by {eo:e} / {el:e}");
                assert!(edq < 1e-5 && edk < 1e-5 && edv < 1e-5, "{name} {sh:?}: backward off by {edq:e} / {edk:e} / {edv:e}");
            }
        }
    }

    /// A cache with shuffled, non-contiguous blocks holding the packed K/V of each sequence.
    fn cache_of(k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, block: usize) -> (KvCache, Vec<Vec<u32>>) {
        let kvd = sh.num_kv_heads * sh.head_dim;
        let blocks: usize = pack.starts.windows(2).map(|w| (w[1] - w[0]).div_ceil(block)).sum();
        let mut cache = KvCache::new(1, blocks + 1, block, sh.num_kv_heads, sh.head_dim);
        let mut ids: Vec<u32> = (0..blocks as u32).map(|b| (b * 7 + 3) % blocks as u32).collect();
        if blocks.is_multiple_of(7) {
            ids = (0..blocks as u32).rev().collect();
        }
        let mut tables = Vec::new();
        let mut next = 0;
        for w in pack.starts.windows(2) {
            let nb = (w[1] - w[0]).div_ceil(block);
            let table = ids[next..next + nb].to_vec();
            next += nb;
            for i in w[0]..w[1] {
                cache.write(0, &table, i - w[0], &k[i * kvd..(i + 1) * kvd], &v[i * kvd..(i + 1) * kvd]);
            }
            tables.push(table);
        }
        (cache, tables)
    }

    #[test]
    fn paged_prefill_and_decode_match_f64() {
        let pack = Packing::from_lens(&LENS);
        let t = pack.total();
        for (si, &sh) in SHAPES.iter().enumerate() {
            let (qd, kvd) = (sh.num_heads * sh.head_dim, sh.num_kv_heads * sh.head_dim);
            let (q, k, v) = (random(t * qd, 41 + si as u64, 2.0), random(t * kvd, 51 + si as u64, 2.0), random(t * kvd, 61 + si as u64, 1.0));
            let (ro, _) = ref_forward(&q, &k, &v, &pack, sh);
            for block in [4, 16] {
                let (cache, tables) = cache_of(&k, &v, &pack, sh, block);
                // Prefill: every token of every sequence (segments of BQ, the gathered tiles).
                let spans = pack.row_spans();
                let seq_of = |i: usize| pack.starts.iter().position(|&s| s > i).unwrap() - 1;
                let queries: Vec<QueryPos> = (0..t).map(|i| QueryPos { table: &tables[seq_of(i)], pos: i - spans[i].0 }).collect();
                // Decode: the last token of each sequence, one query per sequence (dot products).
                let last: Vec<usize> = pack.starts[1..].iter().map(|&e| e - 1).collect();
                let dq: Vec<QueryPos> = last.iter().map(|&i| queries[i]).collect();
                let dqv: Vec<f32> = last.iter().flat_map(|&i| q[i * qd..(i + 1) * qd].to_vec()).collect();
                let dro: Vec<f64> = last.iter().flat_map(|&i| ro[i * qd..(i + 1) * qd].to_vec()).collect();
                for (name, kern) in all_kernels() {
                    let mut out = vec![f32::NAN; t * qd];
                    paged_attention_with(kern, &q, &queries, &cache, 0, sh.num_heads, &mut out);
                    let e = err(&out, &ro, "prefill");
                    let mut dout = vec![f32::NAN; dqv.len()];
                    paged_attention_with(kern, &dqv, &dq, &cache, 0, sh.num_heads, &mut dout);
                    let ed = err(&dout, &dro, "decode");
                    eprintln!("{name} {sh:?} block {block}: prefill {e:.1e} decode {ed:.1e}");
                    assert!(e < 2e-6 && ed < 2e-6, "{name} {sh:?}: paged off by {e:e} / {ed:e}");
                }
            }
        }
    }

    #[test]
    fn a_nan_reaches_exactly_the_rows_that_see_it() {
        let lens = [3, 70, 2];
        let pack = Packing::from_lens(&lens);
        let t = pack.total();
        let sh = AttnShape { num_heads: 3, num_kv_heads: 1, head_dim: 16 };
        let (qd, kvd) = (48, 16);
        let (mut q, mut k, v) = (random(t * qd, 1, 1.0), random(t * kvd, 2, 1.0), random(t * kvd, 3, 1.0));
        // A NaN key at row 3 + 40 (sequence 1, position 40), a NaN query at row 3 + 10, head 1.
        let (kn, qn) = (3 + 40, 3 + 10);
        k[kn * kvd + 5] = f32::NAN;
        q[qn * qd + 16 + 2] = f32::NAN;
        let spans = pack.row_spans();
        for (name, kern) in all_kernels() {
            let (mut out, mut lse) = (vec![0f32; t * qd], vec![0f32; t * 3]);
            attention_forward_with(kern, &q, &k, &v, &pack, sh, &mut out, &mut lse);
            let (cache, tables) = cache_of(&k, &v, &pack, sh, 16);
            let queries: Vec<QueryPos> = (0..t).map(|i| QueryPos { table: &tables[if i < 3 { 0 } else if i < 73 { 1 } else { 2 }], pos: i - spans[i].0 }).collect();
            let mut pout = vec![0f32; t * qd];
            paged_attention_with(kern, &q, &queries, &cache, 0, 3, &mut pout);
            for i in 0..t {
                for h in 0..3 {
                    let sees = (3..73).contains(&i) && i >= kn || (i == qn && h == 1);
                    let row = &out[i * qd + h * 16..i * qd + h * 16 + 16];
                    let prow = &pout[i * qd + h * 16..i * qd + h * 16 + 16];
                    assert_eq!(row.iter().all(|x| x.is_nan()), sees, "{name}: row {i} head {h}: {row:?}");
                    assert_eq!(row.iter().any(|x| x.is_nan()), sees, "{name}: row {i} head {h}");
                    assert_eq!(lse[i * 3 + h].is_nan(), sees, "{name}: lse of row {i} head {h}");
                    assert_eq!(prow.iter().all(|x| x.is_nan()), sees, "{name}: paged row {i} head {h}");
                }
            }
        }
    }

    #[test]
    fn backward_does_not_depend_on_the_thread_count() {
        let pack = Packing::from_lens(&[40, 100, 1, 9]);
        let t = pack.total();
        let sh = AttnShape { num_heads: 3, num_kv_heads: 1, head_dim: 64 };
        let (qd, kvd) = (192, 64);
        let (q, k, v, dout) = (random(t * qd, 5, 2.0), random(t * kvd, 6, 2.0), random(t * kvd, 7, 1.0), random(t * qd, 8, 1.0));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let (mut out, mut lse) = (vec![0f32; t * qd], vec![0f32; t * 3]);
                attention_forward(&q, &k, &v, &pack, sh, &mut out, &mut lse);
                let (mut dq, mut dk, mut dv) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
                attention_backward(&q, &k, &v, &out, &lse, &dout, &pack, sh, &mut dq, &mut dk, &mut dv);
                [out, lse, dq, dk, dv].map(|x| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
            })
        };
        assert!(run(1) == run(3));
    }

    /// The implementation this file replaced (one (row, head) at a time, libm exp), kept to
    /// measure how far the new kernels moved the results.
    mod old {
        use super::super::{dot, AttnShape, KvCache, Packing, QueryPos};
        use rayon::prelude::*;

        pub(super) fn paged_attention(q: &[f32], queries: &[QueryPos], cache: &KvCache, layer: usize, num_heads: usize, out: &mut [f32]) {
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

        pub(super) fn attention_forward(q: &[f32], k: &[f32], v: &[f32], pack: &Packing, sh: AttnShape, out: &mut [f32], lse: &mut [f32]) {
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

        #[allow(clippy::too_many_arguments)]
        pub(super) fn attention_backward(
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
    }

    /// Max |new − old| and max |new − old| / max|old| over SmolLM2-shaped random inputs (printed:
    /// the size of the change the new summation order and exp make), bounded loosely.
    #[test]
    fn new_kernels_move_results_by_rounding_only() {
        let pack = Packing::from_lens(&[300, 1, 77, 130]);
        let t = pack.total();
        let sh = AttnShape { num_heads: 9, num_kv_heads: 3, head_dim: 64 };
        let (qd, kvd) = (576, 192);
        let (q, k, v, dout) = (random(t * qd, 71, 2.0), random(t * kvd, 72, 2.0), random(t * kvd, 73, 1.0), random(t * qd, 74, 1.0));
        let diff = |a: &[f32], b: &[f32]| {
            let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let abs = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            (abs, abs / scale)
        };
        let (mut out, mut lse) = (vec![0f32; t * qd], vec![0f32; t * 9]);
        attention_forward(&q, &k, &v, &pack, sh, &mut out, &mut lse);
        let (mut oo, mut ol) = (vec![0f32; t * qd], vec![0f32; t * 9]);
        old::attention_forward(&q, &k, &v, &pack, sh, &mut oo, &mut ol);
        let (mut dq, mut dk, mut dv) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
        attention_backward(&q, &k, &v, &out, &lse, &dout, &pack, sh, &mut dq, &mut dk, &mut dv);
        let (mut odq, mut odk, mut odv) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
        old::attention_backward(&q, &k, &v, &oo, &ol, &dout, &pack, sh, &mut odq, &mut odk, &mut odv);
        let (cache, tables) = cache_of(&k, &v, &pack, sh, 16);
        let spans = pack.row_spans();
        let seq_of = |i: usize| pack.starts.iter().position(|&s| s > i).unwrap() - 1;
        let queries: Vec<QueryPos> = (0..t).map(|i| QueryPos { table: &tables[seq_of(i)], pos: i - spans[i].0 }).collect();
        let (mut po, mut opo) = (vec![0f32; t * qd], vec![0f32; t * qd]);
        paged_attention(&q, &queries, &cache, 0, 9, &mut po);
        old::paged_attention(&q, &queries, &cache, 0, 9, &mut opo);
        for (what, a, b) in [("out", &out, &oo), ("lse", &lse, &ol), ("dq", &dq, &odq), ("dk", &dk, &odk), ("dv", &dv, &odv), ("paged", &po, &opo)] {
            let (abs, rel) = diff(a, b);
            eprintln!("new vs old {what}: max abs {abs:.2e}, relative to max |old| {rel:.2e}");
            assert!(rel < 1e-5, "{what} moved by {rel:e}");
        }
    }
}
