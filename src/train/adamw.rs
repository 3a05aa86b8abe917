//! AdamW on f32 master weights with global gradient-norm clipping and a constant learning rate
//! with optional linear warm-up — `torch.optim.AdamW` + `clip_grad_norm_` as verl's actor runs
//! them (weight decay on every parameter).
//!
//! One step t = 1, 2, … with learning rate η_t, for each parameter θ with gradient g:
//!   clip:  g ← g · min(1, max_norm / (‖g_all‖₂ + 1e-6))     (skip the step if ‖g_all‖ is not finite)
//!   θ ← θ · (1 − η λ)
//!   m ← m + (1 − β1)(g − m),   v ← β2 v + (1 − β2) g²
//!   θ ← θ − (η / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)

use super::grads::{named_params, named_params_mut, Grads};
use crate::model::weights::ModelWeights;
use rayon::prelude::*;

/// Learning rate per optimizer step (0-based).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub lr: f32,
    /// Linear warm-up over this many steps (0: none).
    pub warmup_steps: usize,
    /// transformers' `get_constant_schedule_with_warmup` convention that verl used: the factor
    /// is step / warmup, so the very first step has lr 0 (and with no warm-up, step 0 still has
    /// lr 0). Off: the factor is (step + 1) / warmup, so no step is wasted.
    pub zero_first_step: bool,
}

impl LrSchedule {
    pub fn constant(lr: f32) -> Self {
        LrSchedule { lr, warmup_steps: 0, zero_first_step: false }
    }

    pub fn lr_at(&self, step: usize) -> f32 {
        let w = self.warmup_steps;
        let factor = if self.zero_first_step {
            if step < w.max(1) { step as f64 / w.max(1) as f64 } else { 1.0 }
        } else if step < w {
            (step + 1) as f64 / w as f64
        } else {
            1.0
        };
        (self.lr as f64 * factor) as f32
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub schedule: LrSchedule,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Global L2 gradient-norm clip; `None`: no clipping.
    pub max_grad_norm: Option<f32>,
}

impl Default for AdamWConfig {
    /// DeepScaleR's actor: lr 1e-6, β (0.9, 0.999), ε 1e-8, weight decay 0.01, clip 1.0.
    fn default() -> Self {
        AdamWConfig {
            schedule: LrSchedule::constant(1e-6),
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
        }
    }
}

/// What one `step` did.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// ‖g‖₂ before clipping.
    pub grad_norm: f64,
    pub lr: f32,
    /// The gradient norm was not finite: weights and moments were left alone.
    pub skipped: bool,
}

/// The optimizer state: first and second moments of every parameter, in `named_params` order.
pub struct AdamW {
    pub cfg: AdamWConfig,
    /// Optimizer steps taken (skipped ones included, as verl's scheduler counts them).
    pub steps: usize,
    /// Updates actually applied (the bias-correction step count).
    pub updates: usize,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, weights: &mut ModelWeights) -> Self {
        let shapes: Vec<usize> = named_params_mut(weights).iter().map(|(_, p)| p.len()).collect();
        AdamW { cfg, steps: 0, updates: 0, m: shapes.iter().map(|&n| vec![0.0; n]).collect(), v: shapes.iter().map(|&n| vec![0.0; n]).collect() }
    }

    /// Clips `grads` in place and updates `weights`. Does not zero the gradients.
    /// The moments by parameter name, for a checkpoint.
    pub fn export_state(&self, weights: &ModelWeights) -> crate::train::checkpoint::OptimizerState {
        let moments = named_params(weights)
            .into_iter()
            .zip(self.m.iter().zip(&self.v))
            .map(|((name, _), (m, v))| (name, m.clone(), v.clone()))
            .collect();
        crate::train::checkpoint::OptimizerState { steps: self.steps, updates: self.updates, moments }
    }

    /// An optimizer restored from a checkpoint; every moment must match a parameter by name
    /// and length, in order.
    pub fn from_state(
        cfg: AdamWConfig,
        weights: &ModelWeights,
        state: crate::train::checkpoint::OptimizerState,
    ) -> anyhow::Result<Self> {
        let params = named_params(weights);
        if params.len() != state.moments.len() {
            anyhow::bail!("optimizer state has {} tensors, the model {}", state.moments.len(), params.len());
        }
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for ((name, p), (sname, sm, sv)) in params.iter().zip(state.moments) {
            if *name != sname || sm.len() != p.len() || sv.len() != p.len() {
                anyhow::bail!("optimizer state tensor `{sname}` does not match parameter `{name}` ({} values)", p.len());
            }
            m.push(sm);
            v.push(sv);
        }
        Ok(AdamW { cfg, steps: state.steps, updates: state.updates, m, v })
    }

    pub fn step(&mut self, weights: &mut ModelWeights, grads: &mut Grads) -> StepReport {
        let c = self.cfg;
        let lr = c.schedule.lr_at(self.steps);
        self.steps += 1;
        let grad_norm = grads.global_norm();
        if !grad_norm.is_finite() {
            return StepReport { grad_norm, lr, skipped: true };
        }
        if let Some(max) = c.max_grad_norm {
            let coef = (max as f64 / (grad_norm + 1e-6)).min(1.0) as f32;
            if coef < 1.0 {
                grads.scale(coef);
            }
        }
        // The moments' step count: the number of non-skipped updates so far, as torch's.
        let t = self.updates + 1;
        let bc1 = 1.0 - (c.beta1 as f64).powi(t as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(t as i32);
        let step_size = (lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr as f64 * c.weight_decay as f64) as f32;
        let params = named_params_mut(weights);
        let gs = grads.named();
        for (((name, p), (gname, g)), (m, v)) in params.into_iter().zip(gs).zip(self.m.iter_mut().zip(self.v.iter_mut())) {
            assert_eq!(name, gname, "weights and gradients disagree on the parameter list");
            p.par_iter_mut().zip(g.par_iter()).zip(m.par_iter_mut().zip(v.par_iter_mut())).with_min_len(4096).for_each(|((p, &g), (m, v))| {
                *p *= decay;
                *m += (1.0 - c.beta1) * (g - *m);
                *v = *v * c.beta2 + (1.0 - c.beta2) * g * g;
                let denom = v.sqrt() / bc2_sqrt + c.eps;
                *p -= step_size * (*m / denom);
            });
        }
        self.updates += 1;
        StepReport { grad_norm, lr, skipped: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let c = LrSchedule::constant(2.0);
        assert_eq!((0..3).map(|s| c.lr_at(s)).collect::<Vec<_>>(), [2.0, 2.0, 2.0]);
        let w = LrSchedule { lr: 4.0, warmup_steps: 4, zero_first_step: false };
        assert_eq!((0..6).map(|s| w.lr_at(s)).collect::<Vec<_>>(), [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]);
        // verl / transformers LambdaLR: step / warmup, so step 0 trains at lr 0.
        let v = LrSchedule { zero_first_step: true, ..w };
        assert_eq!((0..6).map(|s| v.lr_at(s)).collect::<Vec<_>>(), [0.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        let v0 = LrSchedule { lr: 4.0, warmup_steps: 0, zero_first_step: true };
        assert_eq!((0..3).map(|s| v0.lr_at(s)).collect::<Vec<_>>(), [0.0, 4.0, 4.0]);
    }

    fn tiny() -> ModelWeights {
        ModelWeights { embed: vec![1.0, -2.0, 3.0, 0.5], layers: vec![], final_norm: vec![1.0, 1.0], lm_head: None }
    }

    #[test]
    fn non_finite_gradient_skips_the_update_and_clipping_scales() {
        let mut w = tiny();
        let mut opt = AdamW::new(AdamWConfig { schedule: LrSchedule::constant(0.1), ..Default::default() }, &mut w);
        let mut g = Grads::zeros_like(&w);
        g.0.embed[1] = f32::NAN;
        let r = opt.step(&mut w, &mut g);
        assert!(r.skipped && w.embed == tiny().embed && opt.updates == 0 && opt.steps == 1);
        // ‖g‖ = 5 > 1: clipped to norm 1 (coefficient 1 / (5 + 1e-6)).
        let mut g = Grads::zeros_like(&w);
        g.0.embed[0] = 3.0;
        g.0.final_norm[1] = 4.0;
        let r = opt.step(&mut w, &mut g);
        assert!(!r.skipped && (r.grad_norm - 5.0).abs() < 1e-9);
        assert!((g.global_norm() - 1.0).abs() < 1e-5);
        // First update: m̂/√v̂ = sign(g), so θ moves by lr (plus decay lr·λ·θ).
        assert!((w.embed[0] - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-5, "{}", w.embed[0]);
        assert!((w.embed[2] - 3.0 * (1.0 - 0.1 * 0.01)).abs() < 1e-6);
    }
}
