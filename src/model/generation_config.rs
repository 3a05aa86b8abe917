//! Sampling defaults from `generation_config.json` (absent file → no defaults).

use super::config::OneOrMany;
use super::TextTokenizer;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerationConfig {
    pub eos_token_id: Option<OneOrMany>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub do_sample: Option<bool>,
}

impl GenerationConfig {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("invalid {}", path.display()))
    }

    /// Every id that ends generation: the EOS ids of this file, of `config.json`
    /// (`model_eos_ids`) and the tokenizer's EOS token, sorted and deduplicated.
    pub fn stop_token_ids(&self, model_eos_ids: &[u32], tok: &TextTokenizer) -> Vec<u32> {
        let mut ids: Vec<u32> = self.eos_token_id.as_ref().map(|e| e.to_vec()).unwrap_or_default();
        ids.extend(model_eos_ids);
        if let Some(id) = tok.eos_token.as_deref().and_then(|t| tok.token_to_id(t)) {
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
