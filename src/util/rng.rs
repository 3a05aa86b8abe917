//! The one seeded random generator of the crate: SplitMix64 (Steele, Lea & Flood 2014). Tiny,
//! fast, platform-independent, and good enough for what it does here: one uniform draw per
//! sampled token, shuffles of the data order, random initial weights, synthetic problems.
//!
//! (`XorShift` below only makes deterministic inputs for tests and benches.)
//!
//! `mix` is its output finaliser on its own: a 64-bit hash used to derive independent seeds from
//! (seed, step, prompt, sample) tuples, so that a draw never depends on what else is in a batch.

/// The SplitMix64 finaliser: a bijective 64-bit mix (every input bit affects every output bit).
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `mix` folded over the parts: `mix(…mix(mix(seed) ^ p0) ^ p1…)`.
pub fn hash_parts(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(mix(seed), |s, &p| mix(s ^ p))
}

/// Deterministic inputs for tests and benches: an xorshift64 stream (not the sampling
/// generator above; the kernel tests and benches have drawn their inputs from it from the start,
/// so one definition keeps their values as they were). Never stuck at zero.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut s = self.0;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        self.0 = s;
        s
    }
    /// Uniform in [−amp, amp), 24 bits.
    pub fn symmetric(&mut self, amp: f32) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amp
    }
    /// Uniform in [0, 1), 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `n` values of `XorShift::new(seed).symmetric(amp)`.
pub fn symmetric_values(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut r = XorShift::new(seed);
    (0..n).map(|_| r.symmetric(amp)).collect()
}

/// A SplitMix64 stream: state advances by the golden-ratio increment, output is `mix` of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The state, for a checkpoint (`Rng::new(state)` continues the stream).
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        let z = mix(self.0);
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0) by rejection: no modulo bias, whatever n is.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // The largest multiple of n that fits: draws at or above it would favour small values.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }

    /// A standard normal draw (Box–Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_stream() {
        // First outputs of SplitMix64 seeded with 1234567 (the reference C implementation).
        let mut r = Rng::new(1234567);
        let want = [6457827717110365317u64, 3203168211198807973, 9817491932198370423];
        for w in want {
            assert_eq!(r.next_u64(), w);
        }
    }

    #[test]
    fn below_is_unbiased_where_modulo_is_not() {
        // n = 3·2^62: a plain `x % n` lands in 0..2^62 twice as often as above it (x < 2^64 wraps
        // once past n for those values only). Rejection keeps every value equally likely.
        let n = 3u64 << 62;
        let mut r = Rng::new(9);
        let low = (0..30_000).filter(|_| r.below(n) < (1u64 << 62)).count() as f64 / 30_000.0;
        assert!((low - 1.0 / 3.0).abs() < 0.02, "share below 2^62: {low}");
        let mut r = Rng::new(9);
        let modulo_low = (0..30_000).filter(|_| r.next_u64() % n < (1u64 << 62)).count() as f64 / 30_000.0;
        assert!((modulo_low - 0.5).abs() < 0.02, "the biased rule this replaces: {modulo_low}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = Rng::new(3).permutation(100);
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
    }
}
