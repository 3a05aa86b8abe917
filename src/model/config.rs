//! `config.json` of a Hugging Face checkpoint, reduced to what the forward pass needs.
//!
//! Two architectures share one forward: Qwen2ForCausalLM (bias on q/k/v, untied lm_head in the
//! 1.5B target) and LlamaForCausalLM (no bias unless `attention_bias`, often tied embeddings).
//! Anything else is refused by name rather than run wrongly.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Qwen2,
    Llama,
}

/// The model hyper-parameters, validated.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (always for Qwen2; `attention_bias` for Llama).
    pub qkv_bias: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// `eos_token_id` is an int in some configs and a list in others.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            OneOrMany::One(x) => vec![*x],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawRopeParameters {
    rope_theta: Option<f64>,
    rope_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: usize,
    rms_norm_eps: f64,
    /// Older checkpoints (DeepSeek-R1-Distill) keep `rope_theta` at the top level ...
    rope_theta: Option<f64>,
    /// ... transformers 5.x writes it inside `rope_parameters`.
    rope_parameters: Option<RawRopeParameters>,
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read model config {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let arch_name = raw
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .or_else(|| raw.model_type.clone())
            .unwrap_or_default();
        let arch = match arch_name.as_str() {
            "Qwen2ForCausalLM" | "qwen2" => Architecture::Qwen2,
            "LlamaForCausalLM" | "llama" => Architecture::Llama,
            "" => bail!("config.json names no architecture (`architectures` and `model_type` are missing)"),
            other => bail!(
                "unsupported architecture `{other}`: scalerl runs Qwen2ForCausalLM and LlamaForCausalLM"
            ),
        };
        if let Some(act) = &raw.hidden_act {
            if act != "silu" {
                bail!("unsupported hidden_act `{act}` (only silu)");
            }
        }
        if raw.use_sliding_window == Some(true) {
            bail!("use_sliding_window = true is not supported");
        }
        if let Some(scaling) = &raw.rope_scaling {
            if !scaling.is_null() {
                bail!("rope_scaling {scaling} is not supported (plain RoPE only)");
            }
        }
        if let Some(rp) = &raw.rope_parameters {
            if let Some(t) = &rp.rope_type {
                if t != "default" {
                    bail!("rope_parameters.rope_type `{t}` is not supported (plain RoPE only)");
                }
            }
        }
        let rope_theta = raw
            .rope_theta
            .or(raw.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10000.0);
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        if raw.num_attention_heads == 0 || num_kv_heads == 0 || raw.num_attention_heads % num_kv_heads != 0 {
            bail!(
                "num_attention_heads ({}) must be a positive multiple of num_key_value_heads ({num_kv_heads})",
                raw.num_attention_heads
            );
        }
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            bail!("head_dim {head_dim} must be even and positive (RoPE rotates pairs)");
        }
        let qkv_bias = match arch {
            Architecture::Qwen2 => true,
            Architecture::Llama => raw.attention_bias.unwrap_or(false),
        };
        Ok(ModelConfig {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            vocab_size: raw.vocab_size,
            rms_norm_eps: raw.rms_norm_eps as f32,
            rope_theta: rope_theta as f32,
            tie_word_embeddings: raw.tie_word_embeddings,
            qkv_bias,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(32768),
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(|e| e.to_vec()).unwrap_or_default(),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(extra: &str) -> String {
        format!(
            r#"{{"architectures":["Qwen2ForCausalLM"],"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":10,
            "rms_norm_eps":1e-6{extra}}}"#
        )
    }

    #[test]
    fn reads_rope_theta_in_both_places() {
        let top = ModelConfig::from_json(&base(r#","rope_theta":5000.0"#)).unwrap();
        assert_eq!(top.rope_theta, 5000.0);
        let nested =
            ModelConfig::from_json(&base(r#","rope_parameters":{"rope_theta":7000.0,"rope_type":"default"}"#))
                .unwrap();
        assert_eq!(nested.rope_theta, 7000.0);
        assert!(nested.qkv_bias);
    }

    #[test]
    fn refuses_unknown_architecture_by_name() {
        let text = base("").replace("Qwen2ForCausalLM", "MistralForCausalLM");
        let err = ModelConfig::from_json(&text).unwrap_err().to_string();
        assert!(err.contains("MistralForCausalLM"), "{err}");
    }

    #[test]
    fn refuses_bad_head_counts() {
        let text = base("").replace(r#""num_key_value_heads":1"#, r#""num_key_value_heads":3"#);
        assert!(ModelConfig::from_json(&text).is_err());
    }
}
