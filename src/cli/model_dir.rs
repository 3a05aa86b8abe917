//! Loading everything a command needs from a model directory onto the chosen backend, with one
//! error line on failure.
use crate::engine::{Backend, Runtime, StepModel};
use crate::model::{GenerationConfig, Model, TextTokenizer};
use anyhow::Result;
use std::path::Path;

pub struct LoadedModel {
    pub runtime: Runtime,
    pub tokenizer: TextTokenizer,
    pub generation: GenerationConfig,
}

impl LoadedModel {
    pub fn load(dir: &Path, backend: Backend) -> Result<Self> {
        let model = Model::load(dir)?;
        let tokenizer = TextTokenizer::load(dir)?;
        let generation = GenerationConfig::load(dir)?;
        Ok(LoadedModel { runtime: Runtime::new(backend, model)?, tokenizer, generation })
    }

    /// Every id that ends a generation: generation_config.json's eos ids, config.json's, and
    /// the tokenizer's eos token.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        self.generation.stop_token_ids(&self.runtime.config().eos_token_ids, &self.tokenizer)
    }
}
