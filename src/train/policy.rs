//! The model being trained, on its backend: the weights the forward and the rollouts read, the
//! f32 master copy the optimizer updates when those weights are lower precision (the CUDA
//! backend's bf16; the CPU reference trains its f32 weights directly), and the optimizer.
//!
//! An applied update ends with the master written into the weights on the backend
//! (`Ops::sync_weights`: one cast pass on a GPU): the next rollout samples from the new weights
//! with no host round trip. Checkpoints read the master (or the f32 weights) back to the host.

use super::adamw::{AdamW, AdamWConfig, OptimizerState, StepReport};
use crate::model::{ModelConfig, Transformer};
use crate::ops::Ops;
use crate::params::HostParams;
use anyhow::Result;

pub struct Policy<O: Ops> {
    pub model: Transformer<O>,
    master: Option<O::Params>,
    pub optim: AdamW<O>,
}

impl<O: Ops> Policy<O> {
    /// `weights` (f32, on the host) on `ops`' backend, with a fresh optimizer or one restored from
    /// `state`.
    pub fn new(ops: O, config: ModelConfig, weights: &HostParams, cfg: AdamWConfig, state: Option<OptimizerState>) -> Result<Self> {
        let table = weights.table().clone();
        let master = if ops.needs_master() { Some(ops.params_from_host(weights, true)?) } else { None };
        let optim = match state {
            Some(s) => AdamW::from_state(cfg, &ops, &table, s)?,
            None => AdamW::new(cfg, &ops, &table)?,
        };
        let model = Transformer::new(config, ops.clone(), ops.params_from_host(weights, false)?, table)?;
        Ok(Policy { model, master, optim })
    }

    /// One optimizer step from `grads` (clipped in place); an applied update reaches the
    /// weights the forward reads.
    pub fn step(&mut self, grads: &mut O::Params) -> Result<StepReport> {
        let ops = &self.model.ops;
        let r = match &mut self.master {
            Some(master) => {
                let r = self.optim.step(ops, master, grads)?;
                if !r.skipped {
                    ops.sync_weights(master, &mut self.model.weights)?;
                }
                r
            }
            None => self.optim.step(ops, &mut self.model.weights, grads)?,
        };
        Ok(r)
    }

    /// A step skipped before it was taken (a non-finite loss): nothing changes but the
    /// schedule, which advances as verl's does.
    pub fn skip_step(&mut self) -> StepReport {
        let lr = self.optim.cfg.schedule.lr_at(self.optim.steps);
        self.optim.steps += 1;
        StepReport { grad_norm: f64::NAN, lr, skipped: true }
    }

    /// The f32 weights on the host (the master copy, or the weights themselves).
    pub fn host_weights(&self) -> Result<HostParams> {
        self.model.ops.params_to_host(self.master.as_ref().unwrap_or(&self.model.weights))
    }

    /// The optimizer's state on the host.
    pub fn optimizer_state(&self) -> Result<OptimizerState> {
        self.optim.export_state(&self.model.ops)
    }
}
