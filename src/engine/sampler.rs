//! Sampling parameters of a request, and the draw of each step: greedy, temperature, top-k,
//! top-p, with a seeded random stream per request (the same seed gives the same tokens, whatever
//! else is in the batch). The arithmetic of a draw is the backend's (`ops::Ops::sample`; CPU
//! reference `ops::cpu::sample`); the engine supplies one uniform number per non-greedy draw.

use crate::ops::Draw;
use crate::util::Rng;
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

    /// The next draw of a request whose random stream is `rng` (advanced only when the draw
    /// needs randomness, so a greedy request consumes none).
    pub fn draw(&self, rng: &mut Rng) -> Draw {
        let uniform = if self.is_greedy() { 0.0 } else { rng.next_f64() };
        Draw { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k, uniform }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::sample::sample_row;

    #[test]
    fn same_seed_same_draws() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let p = SamplingParams { temperature: 0.8, top_k: 10, top_p: 0.9, ..Default::default() };
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| sample_row(&logits, &p.draw(&mut rng)).token).collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn greedy_draws_take_no_randomness() {
        let mut rng = Rng::new(5);
        let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
        greedy.draw(&mut rng);
        assert_eq!(rng, Rng::new(5));
    }
}
