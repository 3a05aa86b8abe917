//! Sampling parameters of a request, and the draw of each token: greedy, temperature, min-p,
//! top-k, top-p. The arithmetic of a draw is the backend's (`ops::Ops::sample`; CPU reference
//! `ops::cpu::sample`); the engine supplies its one uniform number, from a counter-based
//! generator keyed on (the request's seed, the token's position): the same seed gives the same
//! tokens whatever else is in the batch, and a sequence preempted and recomputed draws exactly
//! what it would have drawn.

use crate::ops::Draw;
use crate::util::hash_parts;
use anyhow::{bail, Result};

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p (1 = off),
    /// among those that min_p and top_k kept.
    pub top_p: f32,
    /// Keep the k most likely tokens, and any tied with the k-th (0 = off).
    pub top_k: usize,
    /// Keep the tokens with p ≥ min_p · p_max (0 = off).
    pub min_p: f32,
    pub seed: u64,
    pub max_new_tokens: usize,
    /// Generation stops after any of these (the EOS ids); the stop token is part of the output.
    pub stop_token_ids: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, seed: 0, max_new_tokens: 256, stop_token_ids: vec![] }
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
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!("min_p must be in [0, 1], got {}", self.min_p);
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// The draw of the token at `position` of the sequence (its index counting the prompt).
    pub fn draw(&self, position: usize) -> Draw {
        let uniform = if self.is_greedy() { 0.0 } else { unit(hash_parts(self.seed, &[position as u64])) };
        Draw { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k, min_p: self.min_p, uniform }
    }
}

/// A 64-bit hash as a uniform number in [0, 1) (its top 53 bits).
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::sample::sample_row;

    #[test]
    fn draws_depend_on_seed_and_position_only() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { temperature: 0.8, top_k: 10, top_p: 0.9, min_p: 0.01, seed: 3, ..Default::default() };
        let run = |p: &SamplingParams| (0..40).map(|pos| sample_row(&logits, &p.draw(pos)).unwrap().token).collect::<Vec<_>>();
        assert_eq!(run(&p), run(&p));
        assert_ne!(run(&p), run(&SamplingParams { seed: 4, ..p.clone() }));
        // The same position gives the same draw whenever it is asked for.
        assert_eq!(p.draw(17), p.draw(17));
        assert_ne!(p.draw(17).uniform, p.draw(18).uniform);
    }

    #[test]
    fn greedy_draws_take_no_randomness() {
        let greedy = SamplingParams { temperature: 0.0, seed: 9, ..Default::default() };
        assert_eq!(greedy.draw(5).uniform, 0.0);
    }

    #[test]
    fn uniforms_are_uniform() {
        let p = SamplingParams { seed: 1, ..Default::default() };
        let n = 20_000;
        let below = (0..n).filter(|&pos| p.draw(pos).uniform < 0.25).count() as f64 / n as f64;
        assert!((below - 0.25).abs() < 0.01, "{below}");
        assert!((0..n).all(|pos| (0.0..1.0).contains(&p.draw(pos).uniform)));
    }
}
