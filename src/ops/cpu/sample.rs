//! Drawing one token from a row of logits: greedy, temperature, min-p, top-k, top-p. The CPU
//! reference of the device sampler (kernels/sample.cu), and the definition it reproduces bit for
//! bit: the same (logits, `Draw`) gives the same token on every backend, whatever order a kernel
//! reduces in.
//!
//! That is why the draw is defined on integers. Every float operation below is one IEEE
//! operation rounded to nearest (a division, a subtraction, fused multiply-adds), which CUDA and
//! the host compute identically; every sum is a sum of u64 (exact, so any order gives the same
//! bits); and the candidate set is cut at a threshold on values, never by sorting with a
//! tie-break. The definition, for a row x of V logits:
//!
//! 1. Scaled logits s_i = x_i / T in f32 (T = 1 when greedy). A NaN or +∞ s_i is an error naming
//!    the column; −∞ is a masked token; a row with no s_i > −∞ is an error. m = max s_i.
//! 2. Weights in fixed point: q_i = ⌊exp(s_i − m) · 2^44⌋ (u64), with exp evaluated by
//!    `fixed_weight` (range reduction and a degree-7 polynomial in f32 fused multiply-adds). The
//!    top token has q = 2^44 exactly; tokens below e^−30.5 of it get q = 0 and are never drawn
//!    (their total share is below V · 2^−44, 9e-9 at V = 151,936). V < 2^20 keeps Σ q < 2^64.
//! 3. The kept set is {i : key(s_i) ≥ σ and q_i ≥ c}, where key orders the f32 values (−0 as +0):
//!    - min-p: c = ⌈min_p · 2^44⌉ (keep p_i ≥ min_p · p_max, in fixed point; 0 = off);
//!    - top-k: σ_k = the k-th largest key counting repeats (0 or ≥ V = off): every token tied
//!      with the k-th is kept, so the set can hold more than k (as vLLM's threshold mask);
//!    - top-p, applied to what min-p and top-k kept (vLLM's order): with M(t) the kept mass
//!      Σ q_i over keys ≥ t, σ_p = the largest key t with f64(M(t)) ≥ f64(top_p) · f64(M(σ_k));
//!      i.e. the smallest set of most likely tokens reaching top_p, ties at the boundary kept.
//!    σ = max(σ_k, σ_p).
//! 4. The draw: U = ⌊uniform · 2^53⌋, r = ⌊U · Q_K / 2^53⌋ (exact in 128 bits) where Q_K is the
//!    kept mass; the token is the first index, in vocabulary order, whose running kept mass
//!    exceeds r. Token i is drawn with probability q_i / Q_K (to 2^−53).
//! 5. Greedy (T = 0 or top_k = 1): the first index with s_i = m.
//!
//! The returned log-prob is that of the drawn token under softmax(logits / T) before any
//! truncation (under the raw logits for greedy): the quantity the GRPO ratio is built from,
//! (s_tok − m) − ln(Q / 2^44) in f64 with Q = Σ q over the whole row (within ~2e-7 of the exact
//! log-softmax; a kernel's f64 log may differ from the host's in the last bit).

use super::super::{Draw, Sampled};
use anyhow::{ensure, Result};

/// Fractional bits of the fixed-point weights: q ≤ 2^44.
pub const WEIGHT_BITS: u32 = 44;
/// Rows must be shorter than this, so a row's Σ q stays below 2^64.
pub const MAX_VOCAB: usize = 1 << 20;

/// log-softmax of one row, in f64 for the normaliser (a 150K-entry sum in f32 loses digits).
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    logits.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

/// Index of the largest logit (the first one on ties, like torch.argmax).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// ⌊exp(d) · 2^44⌋ for d = s − m ≤ 0, evaluated the same way as kernels/sample.cu does: each
/// step is one correctly rounded f32 operation (fused multiply-adds), so both give the same bits.
#[inline(always)]
pub fn fixed_weight(d: f32) -> u64 {
    // Below −31 the weight is under 2^−44 · 0.6: zero. (Also −∞; NaN never gets here.)
    if !(d >= -31.0) {
        return 0;
    }
    // d = n ln2 + r with |r| ≤ ln2 / 2 (Cody–Waite, ln2 split in two for an exact-ish r).
    let n = (d * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, d);
    let r = (-n).mul_add(LN2_LO, r);
    // exp(r) by its Taylor series to r^7 (error < 6e-9 relative on |r| ≤ 0.347), Horner form.
    let mut p = EXP_C[7];
    for &c in EXP_C[..7].iter().rev() {
        p = p.mul_add(r, c);
    }
    // · 2^(n + 44): n ∈ [−45, 0], so the scale is a normal power of two and the product exact.
    let scale = f32::from_bits(((n as i32 + WEIGHT_BITS as i32 + 127) as u32) << 23);
    (p * scale) as u64
}

// The constants, as the shortest decimals of their f32 values (kernels/sample.cu spells them
// the same): log2(e), ln 2 in two parts (the high part has 16 bits, so n · LN2_HI is exact), 1/k!.
const LOG2E: f32 = std::f32::consts::LOG2_E; // 1.442695, 0x3fb8aa3b
const LN2_HI: f32 = 0.69314575; // 0x3f317200
const LN2_LO: f32 = 1.4286068e-6; // 0x35bfbe8e
const EXP_C: [f32; 8] = [1.0, 1.0, 0.5, 0.16666667, 0.041666668, 0.008333334, 0.0013888889, 0.0001984127];

/// The order of f32 values as u32 (−0 and +0 the same; −∞ is 0x007fffff, above 0, so key 0
/// keeps everything).
pub fn sort_key(s: f32) -> u32 {
    let b = if s == 0.0 { 0 } else { s.to_bits() };
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// The min-p cut in fixed point: ⌈min_p · 2^44⌉ (exact: a power-of-two scale in f64).
pub fn min_weight(min_p: f32) -> u64 {
    (min_p as f64 * (1u64 << WEIGHT_BITS) as f64).ceil() as u64
}

/// The draw's uniform as a 53-bit integer: ⌊u · 2^53⌋ (exact for the engine's uniforms, which
/// are multiples of 2^−53).
pub fn uniform_bits(u: f64) -> u64 {
    (u * (1u64 << 53) as f64) as u64
}

/// r = ⌊U · mass / 2^53⌋ < mass: the kept mass to pass before the drawn token.
pub fn draw_point(uniform53: u64, mass: u64) -> u64 {
    ((uniform53 as u128 * mass as u128) >> 53) as u64
}

/// The scaled logits, or an error naming the first column that is NaN or +∞ once scaled.
fn scaled(logits: &[f32], t: f32) -> Result<Vec<f32>> {
    let s: Vec<f32> = logits.iter().map(|&x| x / t).collect();
    if let Some(i) = s.iter().position(|v| v.is_nan() || *v == f32::INFINITY) {
        return Err(bad_logit(i, logits[i], t));
    }
    Ok(s)
}

/// The error of a row whose column `col` (raw logit `x`) is NaN or +∞ at temperature `t`
/// (1 when greedy); the device sampler reports the same words.
pub fn bad_logit(col: usize, x: f32, t: f32) -> anyhow::Error {
    anyhow::anyhow!("logit {col} is {} ({x} at temperature {t}): cannot sample from it", x / t)
}

/// The error of a row with no logit above −∞ (both backends).
pub const ALL_MASKED: &str = "every logit of the row is -inf: nothing to sample";

/// The threshold σ of the kept set {key ≥ σ, q ≥ c} (step 3 of the module doc).
fn kept_threshold(keys: &[u32], q: &[u64], c: u64, d: &Draw) -> u32 {
    let v = keys.len();
    let sigma_k = if d.top_k > 0 && d.top_k < v {
        let mut k = keys.to_vec();
        // The k-th largest, repeats counted.
        *k.select_nth_unstable_by(d.top_k - 1, |a, b| b.cmp(a)).1
    } else {
        0
    };
    if d.top_p >= 1.0 {
        return sigma_k;
    }
    // What min-p and top-k kept, by decreasing key; σ_p is the key at which the running mass
    // first reaches top_p of the whole, taken after the last token of that key.
    let mut kept: Vec<usize> = (0..v).filter(|&i| keys[i] >= sigma_k && q[i] >= c).collect();
    kept.sort_unstable_by(|&a, &b| keys[b].cmp(&keys[a]));
    let total: u64 = kept.iter().map(|&i| q[i]).sum();
    let target = d.top_p as f64 * total as f64;
    let mut mass = 0u64;
    for (j, &i) in kept.iter().enumerate() {
        mass += q[i];
        let last_of_key = kept.get(j + 1).is_none_or(|&next| keys[next] != keys[i]);
        if last_of_key && mass as f64 >= target {
            return keys[i];
        }
    }
    unreachable!("the whole kept mass reaches any top_p ≤ 1")
}

/// Draws one token from a row of logits (see the module doc for the exact definition).
pub fn sample_row(logits: &[f32], d: &Draw) -> Result<Sampled> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU feature was just checked.
        return unsafe { sample_row_fma(logits, d) };
    }
    sample_row_impl(logits, d)
}

/// The same code compiled with FMA enabled: `mul_add` is then one instruction rather than a
/// call to libm's software `fmaf` (both correctly rounded: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn sample_row_fma(logits: &[f32], d: &Draw) -> Result<Sampled> {
    sample_row_impl(logits, d)
}

#[inline(always)]
fn sample_row_impl(logits: &[f32], d: &Draw) -> Result<Sampled> {
    d.validate()?;
    let v = logits.len();
    ensure!(v > 0, "sampling from an empty row");
    ensure!(v < MAX_VOCAB, "a row of {v} logits: the sampler takes fewer than {MAX_VOCAB}");
    let greedy = d.is_greedy();
    let s = scaled(logits, if greedy { 1.0 } else { d.temperature })?;
    let m = s.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    ensure!(m > f32::NEG_INFINITY, "{ALL_MASKED}");
    // A loop, not a closure: closures are not compiled with `sample_row_fma`'s FMA feature.
    let mut q: Vec<u64> = Vec::with_capacity(v);
    for &si in &s {
        q.push(fixed_weight(si - m));
    }
    let total: u64 = q.iter().sum();
    let token = if greedy {
        s.iter().position(|&si| si == m).expect("m is one of the values")
    } else {
        let keys: Vec<u32> = s.iter().map(|&si| sort_key(si)).collect();
        let c = min_weight(d.min_p);
        let sigma = kept_threshold(&keys, &q, c, d);
        let kept = |i: usize| keys[i] >= sigma && q[i] >= c;
        let mass: u64 = (0..v).filter(|&i| kept(i)).map(|i| q[i]).sum();
        let r = draw_point(uniform_bits(d.uniform), mass);
        let mut run = 0u64;
        (0..v)
            .find(|&i| {
                if kept(i) {
                    run += q[i];
                }
                run > r
            })
            .expect("r is below the kept mass")
    };
    Ok(Sampled { token: token as u32, logprob: logprob(s[token], m, total) })
}

/// (s − m) − ln(Q / 2^44) in f64: the log-prob before truncation (step 5's note).
pub fn logprob(s: f32, m: f32, total: u64) -> f32 {
    (s as f64 - m as f64 - ((total as f64).ln() - WEIGHT_BITS as f64 * std::f64::consts::LN_2)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;

    fn draw(temperature: f32, top_k: usize, top_p: f32, rng: &mut Rng) -> Draw {
        Draw { temperature, top_k, top_p, min_p: 0.0, uniform: rng.next_f64() }
    }

    fn greedy() -> Draw {
        Draw { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: 0.0 }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let s = sample_row(&[0.0, 3.0, 3.0, 1.0], &greedy()).unwrap();
        assert_eq!(s.token, 1);
        assert!(s.logprob < 0.0);
        // top_k = 1 is greedy too, at any temperature (log-prob under the raw logits).
        let k1 = Draw { temperature: 0.5, top_k: 1, ..greedy() };
        assert_eq!(sample_row(&[0.0, 3.0, 3.0, 1.0], &k1).unwrap(), s);
    }

    #[test]
    fn fixed_weights_follow_exp() {
        assert_eq!(fixed_weight(0.0), 1 << 44);
        assert_eq!(fixed_weight(f32::NEG_INFINITY), 0);
        assert_eq!(fixed_weight(-31.5), 0);
        let mut last = 1u64 << 44;
        for i in 1..3000 {
            let d = -(i as f32) * 0.01;
            let w = fixed_weight(d);
            let exact = (d as f64).exp() * (1u64 << 44) as f64;
            assert!((w as f64 - exact).abs() <= exact * 2e-7 + 1.0, "d {d}: {w} vs {exact}");
            assert!(w <= last, "not monotone at {d}");
            last = w;
        }
    }

    #[test]
    fn constants_have_the_bits_the_kernel_spells() {
        let bits: Vec<u32> = [LOG2E, LN2_HI, LN2_LO].iter().chain(&EXP_C[3..]).map(|c| c.to_bits()).collect();
        assert_eq!(bits, [0x3fb8aa3b, 0x3f317200, 0x35bfbe8e, 0x3e2aaaab, 0x3d2aaaab, 0x3c088889, 0x3ab60b61, 0x39500d01]);
    }

    #[test]
    fn keys_order_floats() {
        let v = [f32::NEG_INFINITY, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, f32::MAX];
        for w in v.windows(2) {
            assert!(sort_key(w[0]) <= sort_key(w[1]), "{w:?}");
        }
        assert_eq!(sort_key(-0.0), sort_key(0.0));
        assert!(sort_key(f32::NEG_INFINITY) > 0);
    }

    #[test]
    fn draw_point_stays_below_the_mass() {
        let top = (1u64 << 53) - 1;
        for mass in [1u64, 7, 1 << 44, u64::MAX] {
            assert!(draw_point(top, mass) < mass);
            assert_eq!(draw_point(0, mass), 0);
        }
        assert_eq!(uniform_bits(0.5), 1 << 52);
    }

    #[test]
    fn top_k_and_top_p_never_leave_their_set() {
        let logits = [2.0, 1.9, 0.0, -1.0, 1.8, -3.0];
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let t = sample_row(&logits, &draw(1.0, 2, 1.0, &mut rng)).unwrap().token;
            assert!(t == 0 || t == 1);
            // p(0..2) ≈ 0.30+0.27 < 0.6 < +0.25: top-p 0.6 keeps exactly {0, 1, 4}
            let t = sample_row(&logits, &draw(1.0, 0, 0.6, &mut rng)).unwrap().token;
            assert!([0, 1, 4].contains(&t), "{t}");
        }
    }

    #[test]
    fn ties_at_a_cut_are_all_kept() {
        // top_k = 2 with the 2nd and 3rd tied: both stay. top_p reached inside a tie: all stay.
        let logits = [3.0, 2.0, 2.0, -5.0];
        let mut seen = [false; 4];
        let mut rng = Rng::new(3);
        for _ in 0..400 {
            seen[sample_row(&logits, &draw(1.0, 2, 1.0, &mut rng)).unwrap().token as usize] = true;
        }
        assert_eq!(seen, [true, true, true, false]);
        let mut seen = [false; 4];
        for _ in 0..400 {
            // p = 0.576, 0.212, 0.212: 0.6 is passed inside the tie.
            seen[sample_row(&logits, &draw(1.0, 0, 0.6, &mut rng)).unwrap().token as usize] = true;
        }
        assert_eq!(seen, [true, true, true, false]);
    }

    #[test]
    fn min_p_keeps_tokens_near_the_top() {
        // p_i / p_max = 1, e^-1 = 0.37, e^-2 = 0.14: min_p 0.2 keeps the first two.
        let logits = [0.0, -1.0, -2.0, -1.0];
        let mut rng = Rng::new(11);
        let mut seen = [false; 4];
        for _ in 0..400 {
            let d = Draw { min_p: 0.2, ..draw(1.0, 0, 1.0, &mut rng) };
            seen[sample_row(&logits, &d).unwrap().token as usize] = true;
        }
        assert_eq!(seen, [true, true, false, true]);
    }

    #[test]
    fn top_p_counts_the_mass_that_top_k_left() {
        // After top-k 2 the pair (0.5, 0.3 of the whole) renormalises to 0.625, 0.375: top-p 0.6
        // keeps the first alone. Measured against the whole row it would keep both.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut rng = Rng::new(5);
        for _ in 0..200 {
            assert_eq!(sample_row(&logits, &draw(1.0, 2, 0.6, &mut rng)).unwrap().token, 0);
        }
    }

    #[test]
    fn the_draw_walks_the_kept_mass_in_vocabulary_order() {
        // Equal weights: uniform u picks token ⌊u · 4⌋.
        let logits = [1.0f32; 4];
        for (u, want) in [(0.0, 0), (0.2499, 0), (0.25, 1), (0.74, 2), (0.99, 3)] {
            let d = Draw { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: u };
            assert_eq!(sample_row(&logits, &d).unwrap().token, want, "u = {u}");
        }
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 1/4, 3/4 at T = 1; at T = 0.5: 1/10, 9/10
        let mut rng = Rng::new(42);
        let n = 20000;
        let ones = (0..n).filter(|_| sample_row(&logits, &draw(0.5, 0, 1.0, &mut rng)).unwrap().token == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.9).abs() < 0.01, "{f}");
    }

    #[test]
    fn logprobs_match_the_exact_log_softmax() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32 * 0.13).sin() * 8.0).collect();
        let mut rng = Rng::new(9);
        for t in [0.6f32, 1.0, 1.7] {
            let scaled: Vec<f32> = logits.iter().map(|x| x / t).collect();
            let exact = log_softmax(&scaled);
            for _ in 0..50 {
                let s = sample_row(&logits, &draw(t, 0, 1.0, &mut rng)).unwrap();
                let want = exact[s.token as usize];
                assert!((s.logprob - want).abs() < 1e-6, "T {t}: {} vs {want}", s.logprob);
            }
        }
        let g = sample_row(&logits, &greedy()).unwrap();
        assert!((g.logprob - log_softmax(&logits)[g.token as usize]).abs() < 1e-6);
    }

    #[test]
    fn masked_tokens_are_never_drawn_and_bad_rows_are_errors() {
        let logits = [f32::NEG_INFINITY, 1.0, f32::NEG_INFINITY, 1.0];
        let mut rng = Rng::new(1);
        for _ in 0..200 {
            let t = sample_row(&logits, &draw(0.7, 0, 1.0, &mut rng)).unwrap().token;
            assert!(t == 1 || t == 3);
        }
        let e = sample_row(&[0.0, f32::NAN], &greedy()).unwrap_err().to_string();
        assert!(e.contains("logit 1 is NaN"), "{e}");
        let e = sample_row(&[0.0, f32::INFINITY], &draw(1.0, 0, 1.0, &mut rng)).unwrap_err().to_string();
        assert!(e.contains("logit 1 is inf"), "{e}");
        // A finite logit that overflows once divided by T.
        let e = sample_row(&[3e38, 0.0], &draw(0.1, 0, 1.0, &mut rng)).unwrap_err().to_string();
        assert!(e.contains("logit 0 is inf"), "{e}");
        let e = sample_row(&[f32::NEG_INFINITY; 3], &greedy()).unwrap_err().to_string();
        assert!(e.contains("-inf"), "{e}");
        assert!(sample_row(&[], &greedy()).is_err());
        let bad = Draw { min_p: 1.5, ..greedy() };
        assert!(sample_row(&[0.0], &bad).unwrap_err().to_string().contains("min_p"));
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, -50.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
