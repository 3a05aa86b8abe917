//! The model the engine runs, on whichever backend the user picked: `Backend` names it
//! (`cpu`, `cuda`, `cuda:N`, `interpret`), `Runtime` holds the model there. This is the one
//! place that matches on the backend; the CLI and the trainer hold a `Runtime`.
//!
//! `StepModel` is the engine's seam: one step runs a batch of chunks through the model and draws
//! the next token of each, returning token ids and log-probs only — never full-vocabulary
//! logits — so sampling can move onto the device without the engine noticing.

use crate::device::Device;
use crate::model::{CudaModel, Model, ModelConfig, SeqChunk, Transformer};
use crate::ops::cpu::KvCache;
use crate::ops::cuda::{CudaOps, DeviceKvCache};
use crate::ops::{Draw, Ops, Sampled};
use anyhow::{bail, Context, Result};
use std::fmt;
use std::str::FromStr;

/// What the generation loop needs from a model: a KV cache of its own kind, and one step.
pub trait StepModel {
    type Cache;
    fn config(&self) -> &ModelConfig;
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<Self::Cache>;
    /// Runs the chunks (appending their K/V to the cache) and, for each chunk with a draw
    /// (`draws[i]` for chunk i; None for a prompt chunk that is not its last), draws the next
    /// token of its sequence from its last position.
    fn step(&self, cache: &mut Self::Cache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Vec<Option<Sampled>>>;
}

impl<O: Ops> StepModel for Transformer<O> {
    type Cache = O::Cache;
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<O::Cache> {
        Transformer::new_cache(self, num_blocks, block_size)
    }
    fn step(&self, cache: &mut O::Cache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Vec<Option<Sampled>>> {
        Transformer::step(self, cache, chunks, draws)
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Backend {
    /// The f32 CPU reference.
    #[default]
    Cpu,
    /// The CUDA backend (bf16, the hand-written kernels, cuBLASLt) on GPU N.
    Cuda(usize),
    /// The CUDA backend with its kernels run on the CPU with CUDA semantics (slow; for checks).
    Interpret,
}

impl FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "cpu" => Backend::Cpu,
            "cuda" | "gpu" => Backend::Cuda(0),
            "interpret" => Backend::Interpret,
            other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Backend::Cuda(n),
                _ => bail!("unknown device `{s}`: expected cpu, cuda, cuda:N or interpret"),
            },
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cpu => write!(f, "cpu"),
            Backend::Cuda(0) => write!(f, "cuda"),
            Backend::Cuda(n) => write!(f, "cuda:{n}"),
            Backend::Interpret => write!(f, "interpret"),
        }
    }
}

impl TryFrom<String> for Backend {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Backend> for String {
    fn from(b: Backend) -> String {
        b.to_string()
    }
}

impl Backend {
    /// The device of the CUDA backend (None for the CPU). A machine without a GPU gets a
    /// "no GPU" error here, not a panic.
    pub fn device(&self) -> Result<Option<Device>> {
        Ok(match self {
            Backend::Cpu => None,
            Backend::Cuda(n) => Some(Device::cuda(*n)?),
            Backend::Interpret => Some(Device::interpret()),
        })
    }
}

/// A model on its backend.
pub enum Runtime {
    Cpu(Model),
    Cuda(Box<CudaModel>),
}

/// The KV cache of a `Runtime`.
pub enum RuntimeCache {
    Cpu(KvCache),
    Cuda(DeviceKvCache),
}

impl Runtime {
    /// `model` on `backend`: kept as it is on the CPU, copied to the device as bf16 otherwise.
    pub fn new(backend: Backend, model: Model) -> Result<Self> {
        match backend {
            Backend::Cpu => Ok(Runtime::Cpu(model)),
            _ => Self::copy_of(backend, &model),
        }
    }

    /// A copy of `model`'s weights on `backend` (a rollout engine beside the trainer's master).
    pub fn copy_of(backend: Backend, model: &Model) -> Result<Self> {
        Ok(match backend.device().with_context(|| format!("device {backend}"))? {
            None => Runtime::Cpu(model.clone()),
            Some(dev) => Runtime::Cuda(Box::new(CudaModel::from_model(CudaOps::new(dev), model)?)),
        })
    }

    /// Replaces the weights with `model`'s (same architecture), in place.
    pub fn set_weights(&mut self, model: &Model) -> Result<()> {
        match self {
            Runtime::Cpu(m) => {
                m.weights.check_same_table(&model.weights, "set_weights")?;
                m.weights.flat_mut().copy_from_slice(model.weights.flat());
                Ok(())
            }
            Runtime::Cuda(m) => m.set_weights(model),
        }
    }

    /// Where it runs, for logs.
    pub fn device_name(&self) -> String {
        match self {
            Runtime::Cpu(m) => m.ops.name(),
            Runtime::Cuda(m) => m.ops.name(),
        }
    }

    /// Logits `[positions, vocab]` of one sequence prefilled in one chunk: every position, or
    /// the last one only (the `logits` command and parity checks).
    pub fn sequence_logits(&self, tokens: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        match self {
            Runtime::Cpu(m) => m.sequence_logits(tokens, all_positions),
            Runtime::Cuda(m) => m.sequence_logits(tokens, all_positions),
        }
    }
}

impl StepModel for Runtime {
    type Cache = RuntimeCache;
    fn config(&self) -> &ModelConfig {
        match self {
            Runtime::Cpu(m) => &m.config,
            Runtime::Cuda(m) => &m.config,
        }
    }
    fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<RuntimeCache> {
        Ok(match self {
            Runtime::Cpu(m) => RuntimeCache::Cpu(m.new_cache(num_blocks, block_size)?),
            Runtime::Cuda(m) => RuntimeCache::Cuda(m.new_cache(num_blocks, block_size)?),
        })
    }
    fn step(&self, cache: &mut RuntimeCache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Vec<Option<Sampled>>> {
        match (self, cache) {
            (Runtime::Cpu(m), RuntimeCache::Cpu(c)) => m.step(c, chunks, draws),
            (Runtime::Cuda(m), RuntimeCache::Cuda(c)) => m.step(c, chunks, draws),
            _ => bail!("a KV cache of another backend was passed to the {} model", self.device_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for (s, b) in [("cpu", Backend::Cpu), ("cuda", Backend::Cuda(0)), ("cuda:3", Backend::Cuda(3)), ("interpret", Backend::Interpret)] {
            assert_eq!(s.parse::<Backend>().unwrap(), b);
            assert_eq!(b.to_string(), s);
        }
        assert_eq!("gpu".parse::<Backend>().unwrap(), Backend::Cuda(0));
        let err = "tpu".parse::<Backend>().unwrap_err().to_string();
        assert!(err.contains("tpu") && err.contains("cuda:N"), "{err}");
        assert!("cuda:x".parse::<Backend>().is_err());
    }
}
