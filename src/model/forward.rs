//! The Qwen2/Llama forward pass on the CPU backend, over a batch of sequence chunks that read
//! and extend the paged KV cache. Prefill (a whole prompt), chunked prefill (a prompt in pieces)
//! and decode (one token per sequence, mixed lengths) are all the same call.
//!
//! Per layer, for the T tokens of the batch flattened into rows:
//!   x += o_proj(attn(rope(q_proj(n1)), rope(k_proj(n1)), v_proj(n1)))   with n1 = rmsnorm(x)
//!   x += down_proj(silu(gate_proj(n2)) * up_proj(n2))                   with n2 = rmsnorm(x)

use super::config::ModelConfig;
use super::weights::ModelWeights;
use crate::backend::cpu::attention::{paged_attention, QueryPos};
use crate::backend::cpu::matmul::{add_bias, matmul_nt};
use crate::backend::cpu::ops::{add_inplace, rmsnorm, rope_cos_sin, rope_inplace, silu_mul_inplace};
use crate::kv::KvCache;
use anyhow::{bail, Result};
use std::path::Path;

pub struct Model {
    pub config: ModelConfig,
    pub weights: ModelWeights,
}

/// New tokens of one sequence: they sit at positions `start_pos ..` and their K/V go to the
/// blocks of `table` (which must already cover `start_pos + tokens.len()` positions).
#[derive(Clone, Copy)]
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub table: &'a [u32],
}

impl Model {
    /// Loads `config.json` and the safetensors weights of a Hugging Face model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let weights = ModelWeights::load(dir, &config)?;
        Ok(Model { config, weights })
    }

    /// A KV cache sized for this model.
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> KvCache {
        let c = &self.config;
        KvCache::new(c.num_layers, num_blocks, block_size, c.num_kv_heads, c.head_dim)
    }

    /// Runs the chunks through every layer, appending their K/V to the cache, and returns the
    /// final-normed hidden states `[total tokens, hidden]` in chunk order.
    pub fn forward_hidden(&self, cache: &mut KvCache, chunks: &[SeqChunk]) -> Result<Vec<f32>> {
        let c = &self.config;
        let (h, qd, kvd, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut tokens = Vec::new();
        let mut queries = Vec::new();
        for ch in chunks {
            let end = ch.start_pos + ch.tokens.len();
            if end > ch.table.len() * cache.block_size {
                bail!("block table covers {} positions, the chunk needs {end}", ch.table.len() * cache.block_size);
            }
            for (i, &t) in ch.tokens.iter().enumerate() {
                if t as usize >= c.vocab_size {
                    bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
                }
                tokens.push(t);
                queries.push(QueryPos { table: ch.table, pos: ch.start_pos + i });
            }
        }
        let t = tokens.len();
        let rope: Vec<(Vec<f32>, Vec<f32>)> =
            queries.iter().map(|q| rope_cos_sin(q.pos, c.head_dim, c.rope_theta)).collect();

        let w = &self.weights;
        let mut x = Vec::with_capacity(t * h);
        for &tok in &tokens {
            x.extend_from_slice(&w.embed[tok as usize * h..(tok as usize + 1) * h]);
        }
        let mut normed = vec![0f32; t * h];
        let (mut q, mut k, mut v) = (vec![0f32; t * qd], vec![0f32; t * kvd], vec![0f32; t * kvd]);
        let mut attn = vec![0f32; t * qd];
        let mut proj = vec![0f32; t * h];
        let (mut gate, mut up) = (vec![0f32; t * inter], vec![0f32; t * inter]);

        for (l, lw) in w.layers.iter().enumerate() {
            rmsnorm(&x, &lw.input_norm, c.rms_norm_eps, &mut normed);
            matmul_nt(&normed, &lw.q_proj, &mut q, t, qd, h);
            matmul_nt(&normed, &lw.k_proj, &mut k, t, kvd, h);
            matmul_nt(&normed, &lw.v_proj, &mut v, t, kvd, h);
            for (y, b) in [(&mut q, &lw.q_bias), (&mut k, &lw.k_bias), (&mut v, &lw.v_bias)] {
                if let Some(b) = b {
                    add_bias(y, b);
                }
            }
            for (i, (cos, sin)) in rope.iter().enumerate() {
                rope_inplace(&mut q[i * qd..(i + 1) * qd], c.head_dim, cos, sin);
                rope_inplace(&mut k[i * kvd..(i + 1) * kvd], c.head_dim, cos, sin);
                let qp = queries[i];
                cache.write(l, qp.table, qp.pos, &k[i * kvd..(i + 1) * kvd], &v[i * kvd..(i + 1) * kvd]);
            }
            paged_attention(&q, &queries, cache, l, c.num_heads, &mut attn);
            matmul_nt(&attn, &lw.o_proj, &mut proj, t, h, qd);
            add_inplace(&mut x, &proj);

            rmsnorm(&x, &lw.post_norm, c.rms_norm_eps, &mut normed);
            matmul_nt(&normed, &lw.gate_proj, &mut gate, t, inter, h);
            matmul_nt(&normed, &lw.up_proj, &mut up, t, inter, h);
            silu_mul_inplace(&mut gate, &up);
            matmul_nt(&gate, &lw.down_proj, &mut proj, t, h, inter);
            add_inplace(&mut x, &proj);
        }
        rmsnorm(&x, &w.final_norm, c.rms_norm_eps, &mut normed);
        Ok(normed)
    }

    /// `[rows, vocab]` logits of final hidden states `[rows, hidden]`.
    pub fn logits(&self, hidden: &[f32]) -> Vec<f32> {
        let (h, v) = (self.config.hidden_size, self.config.vocab_size);
        let rows = hidden.len() / h;
        let mut out = vec![0f32; rows * v];
        matmul_nt(hidden, self.weights.lm_head(), &mut out, rows, v, h);
        out
    }
}
