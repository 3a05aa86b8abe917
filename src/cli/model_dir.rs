//! Loading everything a command needs from a model directory, with one error line on failure.
use crate::model::{GenerationConfig, Model, TextTokenizer};
use anyhow::Result;
use std::path::Path;

pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: TextTokenizer,
    pub generation: GenerationConfig,
}

impl LoadedModel {
    pub fn load(dir: &Path) -> Result<Self> {
        let model = Model::load(dir)?;
        let tokenizer = TextTokenizer::load(dir)?;
        let generation = GenerationConfig::load(dir)?;
        Ok(LoadedModel { model, tokenizer, generation })
    }

    /// Every id that ends a generation: generation_config.json's eos ids, config.json's, and
    /// the tokenizer's eos token.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        self.generation.stop_token_ids(&self.model.config.eos_token_ids, &self.tokenizer)
    }
}
