//! Vector helpers shared by the CPU ops: a fast f32 `exp`, as an AVX-512 intrinsic routine
//! (16 lanes) and as portable scalar code that the compiler vectorises (SSE2, or AVX2 when
//! inlined into an `avx2` function). Both are the same algorithm (Cephes `expf`):
//!
//!   x = clamp(x, −104, 88.8)              (NaN passes through the clamp unchanged)
//!   n = round(x·log2 e),  r = x − n·ln 2  (ln 2 split hi + lo, so n·hi is exact: Cody–Waite)
//!   e^r ≈ 1 + r + r²·P(r), |r| ≤ ln2/2     (degree-5 minimax P; ~1–2 ulp)
//!   e^x = e^r · 2^n
//!
//! −104 is below the smallest denormal's log (−103.3), so very negative inputs (and −∞, the
//! masked scores of attention) give exactly 0; above 88.72 the result is +∞. The clamp keeps
//! `n·ln2` finite (−∞ − (−∞) would be NaN).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4; // 0.693359375: 9 significant bits, so n·LN2_HI is exact
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_LO: f32 = -104.0;
const EXP_HI: f32 = 88.8;
const P: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

/// e^x, ~1–2 ulp on [−87, 88]; exact 0 below −104 and for −∞; NaN → NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // clamp (not max/min, which drop a NaN) lets a NaN through.
    let x = x.clamp(EXP_LO, EXP_HI);
    // Round to nearest with the 1.5·2^23 trick (vectorises without SSE4.1's roundps).
    const MAGIC: f32 = 12_582_912.0;
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = P[0];
    for c in &P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    // 2^n in two factors, each a normal float, so n from −150 (→ 0) to 129 (→ ∞) works.
    let ni = n as i32;
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let s1 = f32::from_bits(((n1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((n2 + 127) as u32) << 23);
    y * s1 * s2
}

/// `exp` on every element, in place (portable; vectorised by the compiler).
#[inline(always)]
pub fn exp_slice(xs: &mut [f32]) {
    for x in xs {
        *x = exp(*x);
    }
}

/// e^x on 16 lanes: the same algorithm, `vscalefps` doing the 2^n (with its own overflow and
/// underflow handling).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub unsafe fn exp_avx512(x: __m512) -> __m512 {
    // max/min return their second operand when either is NaN: x second keeps a NaN.
    let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(P[0]);
    for &c in &P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    // (p·r² + r) + 1, Cephes' order: r joins the small term before the 1 swamps its low bits.
    let y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0));
    _mm512_scalef_ps(y, n)
}

/// `exp_avx512` over a slice (the tail masked).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp_slice_avx512(xs: &mut [f32]) {
    let mut chunks = xs.chunks_exact_mut(16);
    for c in &mut chunks {
        _mm512_storeu_ps(c.as_mut_ptr(), exp_avx512(_mm512_loadu_ps(c.as_ptr())));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let m: __mmask16 = ((1u32 << rest.len()) - 1) as __mmask16;
        let v = exp_avx512(_mm512_maskz_loadu_ps(m, rest.as_ptr()));
        _mm512_mask_storeu_ps(rest.as_mut_ptr(), m, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs across the whole range, the edges and the specials.
    fn inputs() -> Vec<f32> {
        let mut xs: Vec<f32> = (-2_000_000..=1_800_000).step_by(7).map(|i| i as f32 * 5e-5).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.7, 88.72, 88.73, 89.0, 1e30, -87.3, -87.4, -100.0, -103.0, -103.9, -104.5, -1e30]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, -f32::MIN_POSITIVE]);
        xs
    }

    fn check(got: &[f32], xs: &[f32]) {
        let mut worst = 0f64;
        for (&g, &x) in got.iter().zip(xs) {
            let want = (x as f64).exp();
            if x.is_nan() {
                assert!(g.is_nan(), "exp(NaN) = {g}");
            } else if want > f32::MAX as f64 {
                assert_eq!(g, f32::INFINITY, "exp({x})");
            } else if want < f32::MIN_POSITIVE as f64 {
                // Denormal range: an absolute error of a denormal ulp or so.
                assert!((g as f64 - want).abs() <= 2.0 * 1.4e-45, "exp({x}) = {g}, want {want}");
            } else {
                let rel = (g as f64 - want).abs() / want;
                worst = worst.max(rel);
                assert!(rel < 3.0 * f32::EPSILON as f64, "exp({x}) = {g}, want {want}: rel {rel:e}");
            }
        }
        assert!(worst > 0.0);
        eprintln!("worst relative error {worst:.3e} ({:.2} eps)", worst / f32::EPSILON as f64);
    }

    #[test]
    fn portable_exp_is_accurate_and_handles_specials() {
        let xs = inputs();
        let mut got = xs.clone();
        exp_slice(&mut got);
        check(&got, &xs);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_accurate_and_handles_specials() {
        if !std::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512F: skipped");
            return;
        }
        let xs = inputs();
        let mut got = xs.clone();
        // SAFETY: detected above.
        unsafe { exp_slice_avx512(&mut got) };
        check(&got, &xs);
        let mut tail = [f32::NEG_INFINITY, 0.0, f32::NAN];
        unsafe { exp_slice_avx512(&mut tail) };
        assert_eq!(&tail[..2], &[0.0, 1.0]);
        assert!(tail[2].is_nan());
    }
}
