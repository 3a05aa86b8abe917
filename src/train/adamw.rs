//! AdamW on f32 master weights with global gradient-norm clipping and a constant learning rate
//! with optional linear warm-up — `torch.optim.AdamW` + `clip_grad_norm_` as verl's actor runs
//! them (weight decay on every parameter). The host logic lives here; the per-element update and
//! the norm are ops (`Ops::adamw_update`, `Ops::sum_squares`; CPU reference `ops::cpu::adamw`).
//!
//! One step t = 1, 2, … with learning rate η_t, for each parameter θ with gradient g:
//!   clip:  g ← g · min(1, max_norm / (‖g_all‖₂ + 1e-6))     (skip the step if ‖g_all‖ is not finite)
//!   θ ← θ · (1 − η λ)
//!   m ← m + (1 − β1)(g − m),   v ← β2 v + (1 − β2) g²
//!   θ ← θ − (η / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)

use crate::ops::{AdamWStep, Ops};
use crate::params::{flat_from_named, ParamTable};
use anyhow::Result;
use std::sync::Arc;

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

/// AdamW's state in host memory, by parameter name (the table's names and order), for a
/// checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// Optimizer steps taken (skipped ones included).
    pub steps: usize,
    /// Updates applied (the bias-correction count).
    pub updates: usize,
    /// (name, m, v) per parameter.
    pub moments: Vec<(String, Vec<f32>, Vec<f32>)>,
}

/// The optimizer state: first and second moments of every parameter, two parameter sets laid
/// out like the weights (one flat buffer each, so a step is one pass over each buffer).
pub struct AdamW<O: Ops> {
    pub cfg: AdamWConfig,
    /// Optimizer steps taken (skipped ones included, as verl's scheduler counts them).
    pub steps: usize,
    /// Updates actually applied (the bias-correction step count).
    pub updates: usize,
    m: O::Params,
    v: O::Params,
}

/// ‖g‖₂ over all parameters (as `clip_grad_norm_`), in f64.
pub fn global_norm<O: Ops>(ops: &O, g: &O::Params) -> Result<f64> {
    Ok(ops.sum_squares(g)?.sqrt())
}

impl<O: Ops> AdamW<O> {
    /// Zero moments for the parameters of `table`.
    pub fn new(cfg: AdamWConfig, ops: &O, table: &Arc<ParamTable>) -> Result<Self> {
        Ok(AdamW { cfg, steps: 0, updates: 0, m: ops.zeros_params(table)?, v: ops.zeros_params(table)? })
    }

    /// Clips `grads` in place and updates `weights` (one AdamW step). Does not zero the
    /// gradients. A gradient norm that is not finite skips the update: weights and moments stay
    /// as they were, the schedule still advances.
    pub fn step(&mut self, ops: &O, weights: &mut O::Params, grads: &mut O::Params) -> Result<StepReport> {
        let c = self.cfg;
        let lr = c.schedule.lr_at(self.steps);
        self.steps += 1;
        let grad_norm = global_norm(ops, grads)?;
        if !grad_norm.is_finite() {
            return Ok(StepReport { grad_norm, lr, skipped: true });
        }
        if let Some(max) = c.max_grad_norm {
            let coef = (max as f64 / (grad_norm + 1e-6)).min(1.0) as f32;
            if coef < 1.0 {
                ops.scale_params(grads, coef)?;
            }
        }
        // The moments' step count: the number of non-skipped updates so far, as torch's.
        let t = self.updates + 1;
        let bc1 = 1.0 - (c.beta1 as f64).powi(t as i32);
        let bc2 = 1.0 - (c.beta2 as f64).powi(t as i32);
        let s = AdamWStep {
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            step_size: (lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            decay: (1.0 - lr as f64 * c.weight_decay as f64) as f32,
        };
        ops.adamw_update(weights, grads, &mut self.m, &mut self.v, &s)?;
        self.updates += 1;
        Ok(StepReport { grad_norm, lr, skipped: false })
    }
}

impl<O: Ops> AdamW<O> {
    /// The moments by parameter name, on the host: what a checkpoint writes.
    pub fn export_state(&self, ops: &O) -> Result<OptimizerState> {
        let (m, v) = (ops.params_to_host(&self.m)?, ops.params_to_host(&self.v)?);
        let moments = m.iter().zip(v.iter()).map(|((e, m), (_, v))| (e.name.clone(), m.to_vec(), v.to_vec())).collect();
        Ok(OptimizerState { steps: self.steps, updates: self.updates, moments })
    }

    /// An optimizer restored from a checkpoint onto `ops`' backend; every moment must match a
    /// parameter of `table` by name and length, in order.
    pub fn from_state(cfg: AdamWConfig, ops: &O, table: &Arc<ParamTable>, state: OptimizerState) -> Result<Self> {
        let (m, v): (Vec<_>, Vec<_>) = state.moments.into_iter().map(|(n, m, v)| ((n.clone(), m), (n, v))).unzip();
        let m = ops.params_from_host(&flat_from_named(table, m, "the optimizer state")?, true)?;
        let v = ops.params_from_host(&flat_from_named(table, v, "the optimizer state")?, true)?;
        Ok(AdamW { cfg, steps: state.steps, updates: state.updates, m, v })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::CpuOps;
    use crate::params::{HostParams, Kind};

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

    fn tiny() -> (Arc<ParamTable>, HostParams) {
        let c = crate::model::ModelConfig {
            arch: crate::model::Architecture::Llama,
            hidden_size: 2,
            intermediate_size: 2,
            num_layers: 0,
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 2,
            vocab_size: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            tie_word_embeddings: true,
            qkv_bias: false,
            max_position_embeddings: 8,
            bos_token_id: None,
            eos_token_ids: vec![],
        };
        let t = ParamTable::new(&c);
        let w = HostParams::from_fn(&t, |e, v| {
            let init: &[f32] = if e.kind == Kind::Embed { &[1.0, -2.0, 3.0, 0.5] } else { &[1.0, 1.0] };
            v.copy_from_slice(init);
        });
        (t, w)
    }

    #[test]
    fn non_finite_gradient_skips_the_update_and_clipping_scales() {
        let (t, mut w) = tiny();
        let w0 = w.clone();
        let ops = CpuOps;
        let mut opt = AdamW::new(AdamWConfig { schedule: LrSchedule::constant(0.1), ..Default::default() }, &ops, &t).unwrap();
        let mut g = HostParams::zeros(&t);
        g.get_mut(t.embed())[1] = f32::NAN;
        let r = opt.step(&ops, &mut w, &mut g).unwrap();
        assert!(r.skipped && w == w0 && opt.updates == 0 && opt.steps == 1);
        // ‖g‖ = 5 > 1: clipped to norm 1 (coefficient 1 / (5 + 1e-6)).
        let mut g = HostParams::zeros(&t);
        g.get_mut(t.embed())[0] = 3.0;
        g.get_mut(t.final_norm())[1] = 4.0;
        let r = opt.step(&ops, &mut w, &mut g).unwrap();
        assert!(!r.skipped && (r.grad_norm - 5.0).abs() < 1e-9);
        assert!((global_norm(&ops, &g).unwrap() - 1.0).abs() < 1e-5);
        // First update: m̂/√v̂ = sign(g), so θ moves by lr (plus decay lr·λ·θ).
        let e = w.get(t.embed());
        assert!((e[0] - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-5, "{}", e[0]);
        assert!((e[2] - 3.0 * (1.0 - 0.1 * 0.01)).abs() < 1e-6);
    }
}
