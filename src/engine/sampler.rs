//! Token sampling: greedy, temperature, top-k, top-p, with a seeded random stream per request
//! (the same seed gives the same tokens, whatever else is in the batch).
//!
//! The returned log-prob is that of the sampled token under softmax(logits / T) before top-k/top-p
//! truncation (under the raw logits for greedy): the quantity the GRPO ratio is built from.

use crate::backend::cpu::ops::log_softmax;
use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p (1 = off).
    pub top_p: f32,
    /// Keep the k most likely tokens (0 = off).
    pub top_k: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Generation stops after any of these (the EOS ids); the stop token is part of the output.
    pub stop_token_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, seed: 0, max_new_tokens: 256, stop_token_ids: vec![] }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("temperature must be a finite number ≥ 0, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("top_p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }
}

/// SplitMix64: tiny, fast, and good enough to draw one uniform number per token.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
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

/// Draws one token from a row of logits. Returns (token, log-prob).
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> (u32, f32) {
    if p.is_greedy() {
        let t = argmax(logits);
        return (t as u32, log_softmax(logits)[t]);
    }
    let scaled: Vec<f32> = logits.iter().map(|v| v / p.temperature).collect();
    let logp = log_softmax(&scaled);
    // Candidates in decreasing probability; with no truncation, skip the sort.
    let truncate = p.top_k > 0 || p.top_p < 1.0;
    let mut cand: Vec<usize> = (0..logp.len()).collect();
    if truncate {
        cand.sort_unstable_by(|&a, &b| logp[b].total_cmp(&logp[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            cand.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let mut mass = 0.0f64;
            let keep = cand
                .iter()
                .position(|&i| {
                    mass += (logp[i] as f64).exp();
                    mass >= p.top_p as f64
                })
                .map_or(cand.len(), |k| k + 1);
            cand.truncate(keep);
        }
    }
    let total: f64 = cand.iter().map(|&i| (logp[i] as f64).exp()).sum();
    let mut u = rng.next_f64() * total;
    for &i in &cand {
        u -= (logp[i] as f64).exp();
        if u < 0.0 {
            return (i as u32, logp[i]);
        }
    }
    let last = *cand.last().expect("at least one candidate");
    (last as u32, logp[last])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> SamplingParams {
        SamplingParams { temperature, top_k, top_p, ..Default::default() }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let (t, lp) = sample(&[0.0, 3.0, 3.0, 1.0], &params(0.0, 0, 1.0), &mut Rng::new(0));
        assert_eq!(t, 1);
        assert!(lp < 0.0);
    }

    #[test]
    fn top_k_and_top_p_never_leave_their_set() {
        let logits = [2.0, 1.9, 0.0, -1.0, 1.8, -3.0];
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let (t, _) = sample(&logits, &params(1.0, 2, 1.0), &mut rng);
            assert!(t == 0 || t == 1);
            // p(0..2) ≈ 0.30+0.27 < 0.6 < +0.25: top-p 0.6 keeps exactly {0, 1, 4}
            let (t, _) = sample(&logits, &params(1.0, 0, 0.6), &mut rng);
            assert!([0, 1, 4].contains(&t), "{t}");
        }
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 1/4, 3/4 at T = 1; at T = 0.5: 1/10, 9/10
        let mut rng = Rng::new(42);
        let n = 20000;
        let ones = (0..n).filter(|_| sample(&logits, &params(0.5, 0, 1.0), &mut rng).0 == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.9).abs() < 0.01, "{f}");
    }

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| sample(&logits, &params(0.8, 10, 0.9), &mut rng).0).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
