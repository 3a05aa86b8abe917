//! The parameters of a Qwen2/Llama model in f32, named and shaped as in Hugging Face
//! checkpoints. Linear weights keep the PyTorch layout `[out_features, in_features]`.

use super::config::ModelConfig;
use super::safetensors_files::Checkpoint;
use anyhow::Result;
use std::path::Path;

pub struct LayerWeights {
    pub input_norm: Vec<f32>,   // [hidden]
    pub q_proj: Vec<f32>,       // [q_dim, hidden]
    pub k_proj: Vec<f32>,       // [kv_dim, hidden]
    pub v_proj: Vec<f32>,       // [kv_dim, hidden]
    pub q_bias: Option<Vec<f32>>, // [q_dim]
    pub k_bias: Option<Vec<f32>>, // [kv_dim]
    pub v_bias: Option<Vec<f32>>, // [kv_dim]
    pub o_proj: Vec<f32>,       // [hidden, q_dim]
    pub post_norm: Vec<f32>,    // [hidden]
    pub gate_proj: Vec<f32>,    // [intermediate, hidden]
    pub up_proj: Vec<f32>,      // [intermediate, hidden]
    pub down_proj: Vec<f32>,    // [hidden, intermediate]
}

pub struct ModelWeights {
    pub embed: Vec<f32>, // [vocab, hidden]
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>, // [hidden]
    /// `None` when the embeddings are tied: the lm_head is `embed`.
    pub lm_head: Option<Vec<f32>>, // [vocab, hidden]
}

impl ModelWeights {
    pub fn lm_head(&self) -> &[f32] {
        self.lm_head.as_deref().unwrap_or(&self.embed)
    }

    /// Loads and shape-checks every tensor the forward pass needs.
    pub fn load(dir: &Path, cfg: &ModelConfig) -> Result<Self> {
        let ckpt = Checkpoint::open(dir)?;
        let (h, q, kv, i, v) = (cfg.hidden_size, cfg.q_dim(), cfg.kv_dim(), cfg.intermediate_size, cfg.vocab_size);
        let layers = (0..cfg.num_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let t = |name: &str, shape: &[usize]| ckpt.tensor_f32(&format!("{p}.{name}"), shape);
                let bias = |name: &str, n: usize| -> Result<Option<Vec<f32>>> {
                    if cfg.qkv_bias {
                        t(name, &[n]).map(Some)
                    } else {
                        Ok(None)
                    }
                };
                Ok(LayerWeights {
                    input_norm: t("input_layernorm.weight", &[h])?,
                    q_proj: t("self_attn.q_proj.weight", &[q, h])?,
                    k_proj: t("self_attn.k_proj.weight", &[kv, h])?,
                    v_proj: t("self_attn.v_proj.weight", &[kv, h])?,
                    q_bias: bias("self_attn.q_proj.bias", q)?,
                    k_bias: bias("self_attn.k_proj.bias", kv)?,
                    v_bias: bias("self_attn.v_proj.bias", kv)?,
                    o_proj: t("self_attn.o_proj.weight", &[h, q])?,
                    post_norm: t("post_attention_layernorm.weight", &[h])?,
                    gate_proj: t("mlp.gate_proj.weight", &[i, h])?,
                    up_proj: t("mlp.up_proj.weight", &[i, h])?,
                    down_proj: t("mlp.down_proj.weight", &[h, i])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // A tied checkpoint normally has no lm_head tensor; if it has one anyway, use it.
        let lm_head = if !cfg.tie_word_embeddings || ckpt.contains("lm_head.weight") {
            Some(ckpt.tensor_f32("lm_head.weight", &[v, h])?)
        } else {
            None
        };
        Ok(ModelWeights {
            embed: ckpt.tensor_f32("model.embed_tokens.weight", &[v, h])?,
            layers,
            final_norm: ckpt.tensor_f32("model.norm.weight", &[h])?,
            lm_head,
        })
    }
}
