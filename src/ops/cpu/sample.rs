//! Drawing one token from a row of logits: greedy, temperature, top-k, top-p. The CPU reference
//! of the device sampler (the rollout issue's), and what every backend runs for now after
//! bringing the chosen rows' logits to the host.
//!
//! The returned log-prob is that of the drawn token under softmax(logits / T) before top-k/top-p
//! truncation (under the raw logits for greedy): the quantity the GRPO ratio is built from.
//! The randomness is one uniform number per draw, supplied by the caller (`Draw::uniform`), so
//! the same (logits, uniform) gives the same token on any backend.

use super::super::{Draw, Sampled};

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

/// Draws one token from a row of logits.
pub fn sample_row(logits: &[f32], d: &Draw) -> Sampled {
    if d.is_greedy() {
        let t = argmax(logits);
        return Sampled { token: t as u32, logprob: log_softmax(logits)[t] };
    }
    let scaled: Vec<f32> = logits.iter().map(|v| v / d.temperature).collect();
    let logp = log_softmax(&scaled);
    // Candidates in decreasing probability; with no truncation, skip the sort.
    let truncate = d.top_k > 0 || d.top_p < 1.0;
    let mut cand: Vec<usize> = (0..logp.len()).collect();
    if truncate {
        cand.sort_unstable_by(|&a, &b| logp[b].total_cmp(&logp[a]).then(a.cmp(&b)));
        if d.top_k > 0 {
            cand.truncate(d.top_k);
        }
        if d.top_p < 1.0 {
            let mut mass = 0.0f64;
            let keep = cand
                .iter()
                .position(|&i| {
                    mass += (logp[i] as f64).exp();
                    mass >= d.top_p as f64
                })
                .map_or(cand.len(), |k| k + 1);
            cand.truncate(keep);
        }
    }
    let total: f64 = cand.iter().map(|&i| (logp[i] as f64).exp()).sum();
    let mut u = d.uniform * total;
    for &i in &cand {
        u -= (logp[i] as f64).exp();
        if u < 0.0 {
            return Sampled { token: i as u32, logprob: logp[i] };
        }
    }
    let last = *cand.last().expect("at least one candidate");
    Sampled { token: last as u32, logprob: logp[last] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::Rng;

    fn draw(temperature: f32, top_k: usize, top_p: f32, rng: &mut Rng) -> Draw {
        Draw { temperature, top_k, top_p, uniform: rng.next_f64() }
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let s = sample_row(&[0.0, 3.0, 3.0, 1.0], &Draw { temperature: 0.0, top_k: 0, top_p: 1.0, uniform: 0.0 });
        assert_eq!(s.token, 1);
        assert!(s.logprob < 0.0);
    }

    #[test]
    fn top_k_and_top_p_never_leave_their_set() {
        let logits = [2.0, 1.9, 0.0, -1.0, 1.8, -3.0];
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let t = sample_row(&logits, &draw(1.0, 2, 1.0, &mut rng)).token;
            assert!(t == 0 || t == 1);
            // p(0..2) ≈ 0.30+0.27 < 0.6 < +0.25: top-p 0.6 keeps exactly {0, 1, 4}
            let t = sample_row(&logits, &draw(1.0, 0, 0.6, &mut rng)).token;
            assert!([0, 1, 4].contains(&t), "{t}");
        }
    }

    #[test]
    fn frequencies_follow_the_tempered_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 1/4, 3/4 at T = 1; at T = 0.5: 1/10, 9/10
        let mut rng = Rng::new(42);
        let n = 20000;
        let ones = (0..n).filter(|_| sample_row(&logits, &draw(0.5, 0, 1.0, &mut rng)).token == 1).count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.9).abs() < 0.01, "{f}");
    }

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, -50.0]);
        let total: f32 = lp.iter().map(|v| v.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
