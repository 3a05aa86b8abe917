//! The Qwen2/Llama forward of the CUDA backend, written on the device layer: bf16 weights and
//! activations in device buffers, `Device::gemm_bf16_nt` for every linear layer, the kernels of
//! `kernels/*.cu` for the rest, and the paged KV cache in device memory. The same code runs on
//! a GPU and in interpret mode; it mirrors `Model::forward_hidden` (src/model/forward.rs).
//!
//! Per layer, for the T tokens of the batch flattened into rows (residual stream in bf16):
//!   n1 = rmsnorm(res += proj)            rmsnorm_residual_bf16 (layer 0: res = embeddings)
//!   q, k, v = n1·Wqᵀ, n1·Wkᵀ, n1·Wvᵀ      gemm_bf16_nt ×3
//!   q, k = rope(q + bq), rope(k + bk)     rope_qk_bf16 (bias fused)
//!   cache[slot(t)] = k, v + bv            kv_cache_write_bf16 (v bias fused)
//!   attn = attention(q, cache)            attention_decode / prefill_attention / paged_attention_bf16
//!                                         (one choice per forward: attention.rs)
//!   proj = attn·Woᵀ                       gemm_bf16_nt
//!   n2 = rmsnorm(res += proj)             rmsnorm_residual_bf16
//!   proj = (silu(n2·Wgᵀ) * n2·Wuᵀ)·Wdᵀ    gemm ×2, silu_mul_bf16, gemm
//! and finally hidden = rmsnorm(res += proj) with the final norm.

use super::attention::AttentionPlan;
use super::kernels::{self, TokenMeta};
use crate::device::{Buffer, Device};
use crate::model::{Model, ModelConfig, SeqChunk};
use anyhow::{bail, Context, Result};

struct LayerBuffers {
    input_norm: Buffer,
    q_proj: Buffer,
    k_proj: Buffer,
    v_proj: Buffer,
    q_bias: Option<Buffer>,
    k_bias: Option<Buffer>,
    v_bias: Option<Buffer>,
    o_proj: Buffer,
    post_norm: Buffer,
    gate_proj: Buffer,
    up_proj: Buffer,
    down_proj: Buffer,
}

/// The model's bf16 weights in device memory.
pub struct CudaModel {
    pub dev: Device,
    pub config: ModelConfig,
    embed: Buffer,
    layers: Vec<LayerBuffers>,
    final_norm: Buffer,
    /// `None` when tied to `embed`.
    lm_head: Option<Buffer>,
}

/// The paged KV cache in device memory: per layer, K and V as
/// `[num_blocks, block_size, kv_heads, head_dim]` bf16 (the layout of src/kv/cache.rs).
pub struct DeviceKvCache {
    pub num_blocks: usize,
    pub block_size: usize,
    pub k: Vec<Buffer>,
    pub v: Vec<Buffer>,
}

/// Uploads an f32 tensor and casts it to bf16 on the device (cast_f32_to_bf16).
fn upload_bf16(dev: &Device, data: &[f32]) -> Result<Buffer> {
    let staging = dev.upload(data)?;
    let out = dev.alloc(data.len() * 2)?;
    kernels::cast_f32_to_bf16(dev, &staging, &out, data.len())?;
    Ok(out)
}

/// Every weight of `model` uploaded to `dev` as bf16: (embed, layers, final norm, lm_head).
fn upload_weights(dev: &Device, model: &Model) -> Result<(Buffer, Vec<LayerBuffers>, Buffer, Option<Buffer>)> {
    let w = &model.weights;
    let up = |v: &[f32]| -> Result<Buffer> { upload_bf16(dev, v) };
    let opt = |v: &Option<Vec<f32>>| v.as_deref().map(up).transpose();
    let layers = w
        .layers
        .iter()
        .enumerate()
        .map(|(l, lw)| -> Result<LayerBuffers> {
            let layer = || -> Result<LayerBuffers> {
                Ok(LayerBuffers {
                    input_norm: up(&lw.input_norm)?,
                    q_proj: up(&lw.q_proj)?,
                    k_proj: up(&lw.k_proj)?,
                    v_proj: up(&lw.v_proj)?,
                    q_bias: opt(&lw.q_bias)?,
                    k_bias: opt(&lw.k_bias)?,
                    v_bias: opt(&lw.v_bias)?,
                    o_proj: up(&lw.o_proj)?,
                    post_norm: up(&lw.post_norm)?,
                    gate_proj: up(&lw.gate_proj)?,
                    up_proj: up(&lw.up_proj)?,
                    down_proj: up(&lw.down_proj)?,
                })
            };
            layer().with_context(|| format!("uploading layer {l} to {}", dev.name()))
        })
        .collect::<Result<Vec<_>>>()?;
    let lm_head = w.lm_head.as_deref().map(up).transpose()?;
    Ok((up(&w.embed)?, layers, up(&w.final_norm)?, lm_head))
}

impl CudaModel {
    /// Copies the weights of a loaded model to `dev` as bf16 (round to nearest even).
    pub fn from_model(dev: Device, model: &Model) -> Result<Self> {
        let (embed, layers, final_norm, lm_head) = upload_weights(&dev, model)?;
        Ok(CudaModel { config: model.config.clone(), embed, layers, final_norm, lm_head, dev })
    }

    /// Replaces the weights with those of `model` (same architecture), on the same device: the
    /// trainer's rollout model after each update. The old copy is freed first, so the device
    /// never holds two (the stream-ordered pool hands the same memory back); after an error the
    /// model holds no weights and must not be used.
    pub fn set_weights(&mut self, model: &Model) -> Result<()> {
        if format!("{:?}", model.config) != format!("{:?}", self.config) {
            bail!("set_weights: the model's config differs from the one on {}", self.dev.name());
        }
        self.layers.clear();
        self.lm_head = None;
        self.embed = self.dev.alloc(0)?;
        self.final_norm = self.dev.alloc(0)?;
        (self.embed, self.layers, self.final_norm, self.lm_head) = upload_weights(&self.dev, model)?;
        Ok(())
    }

    /// A KV cache of `num_blocks` blocks of `block_size` tokens (uninitialised: only positions
    /// written by a forward are ever read).
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<DeviceKvCache> {
        let c = &self.config;
        let bytes = num_blocks * block_size * c.kv_dim() * 2;
        let alloc = || (0..c.num_layers).map(|_| self.dev.alloc(bytes)).collect::<Result<Vec<_>>>();
        Ok(DeviceKvCache { num_blocks, block_size, k: alloc()?, v: alloc()? })
    }

    /// Runs the chunks through every layer, appending their K/V to the cache, and returns the
    /// final-normed hidden states `[total tokens, hidden]` bf16 in chunk order.
    pub fn forward_hidden(&self, cache: &mut DeviceKvCache, chunks: &[SeqChunk]) -> Result<Buffer> {
        let c = &self.config;
        let dev = &self.dev;
        let (h, qd, kvd, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut ids = Vec::new();
        for ch in chunks {
            for &t in ch.tokens {
                if t as usize >= c.vocab_size {
                    bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
                }
                ids.push(t as i32);
            }
        }
        let t = ids.len();
        if t == 0 {
            bail!("forward of an empty batch");
        }
        let seqs: Vec<(usize, usize, &[u32])> =
            chunks.iter().map(|ch| (ch.start_pos, ch.tokens.len(), ch.table)).collect();
        let meta = TokenMeta::upload(dev, &seqs, cache.block_size)?;
        if meta.blocks_used > cache.num_blocks {
            bail!("a block table names block {} of a {}-block cache", meta.blocks_used - 1, cache.num_blocks);
        }
        let ids = dev.upload(&ids)?;
        let attention = AttentionPlan::new(dev, &meta, c.num_heads, c.num_kv_heads, c.head_dim)?;

        let bf = |n: usize| dev.alloc(n * 2);
        let residual = bf(t * h)?;
        let normed = bf(t * h)?;
        let (q, k, v) = (bf(t * qd)?, bf(t * kvd)?, bf(t * kvd)?);
        let attn = bf(t * qd)?;
        let proj = bf(t * h)?;
        let (gate, up) = (bf(t * inter)?, bf(t * inter)?);

        kernels::embedding_gather(dev, &ids, &self.embed, &residual, t, h, c.vocab_size)?;
        for (l, lw) in self.layers.iter().enumerate() {
            let x = (l > 0).then_some(&proj);
            kernels::rmsnorm_residual(dev, x, &residual, &lw.input_norm, &normed, t, h, c.rms_norm_eps)?;
            dev.gemm_bf16_nt(&normed, &lw.q_proj, &q, t, qd, h)?;
            dev.gemm_bf16_nt(&normed, &lw.k_proj, &k, t, kvd, h)?;
            dev.gemm_bf16_nt(&normed, &lw.v_proj, &v, t, kvd, h)?;
            kernels::rope_qk(
                dev,
                &q,
                &k,
                lw.q_bias.as_ref(),
                lw.k_bias.as_ref(),
                &meta,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
                c.rope_theta,
            )?;
            kernels::kv_cache_write(
                dev,
                &k,
                &v,
                lw.v_bias.as_ref(),
                &cache.k[l],
                &cache.v[l],
                &meta,
                cache.num_blocks,
                kvd,
            )?;
            attention.run(
                dev,
                &q,
                &cache.k[l],
                &cache.v[l],
                &attn,
                &meta,
                cache.num_blocks,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim,
            )?;
            dev.gemm_bf16_nt(&attn, &lw.o_proj, &proj, t, h, qd)?;

            kernels::rmsnorm_residual(dev, Some(&proj), &residual, &lw.post_norm, &normed, t, h, c.rms_norm_eps)?;
            dev.gemm_bf16_nt(&normed, &lw.gate_proj, &gate, t, inter, h)?;
            dev.gemm_bf16_nt(&normed, &lw.up_proj, &up, t, inter, h)?;
            kernels::silu_mul(dev, &gate, &up, &gate, t * inter)?;
            dev.gemm_bf16_nt(&gate, &lw.down_proj, &proj, t, h, inter)?;
        }
        let x = (!self.layers.is_empty()).then_some(&proj);
        kernels::rmsnorm_residual(dev, x, &residual, &self.final_norm, &normed, t, h, c.rms_norm_eps)?;
        Ok(normed)
    }

    /// f32 logits `[rows.len(), vocab]` of the given rows of final hidden states `[_, hidden]`
    /// (bf16 lm_head GEMM, then cast_bf16_to_f32 and a download).
    pub fn logits(&self, hidden: &Buffer, rows: &[usize]) -> Result<Vec<f32>> {
        let c = &self.config;
        let dev = &self.dev;
        let (h, v, n) = (c.hidden_size, c.vocab_size, rows.len());
        if n == 0 {
            return Ok(Vec::new());
        }
        let avail = hidden.len_bytes() / (2 * h);
        let ids = rows
            .iter()
            .map(|&r| if r < avail { Ok(r as i32) } else { bail!("row {r} of {avail} hidden rows") })
            .collect::<Result<Vec<i32>>>()?;
        let ids = dev.upload(&ids)?;
        let picked = dev.alloc(n * h * 2)?;
        kernels::embedding_gather(dev, &ids, hidden, &picked, n, h, avail)?;
        let logits16 = dev.alloc(n * v * 2)?;
        dev.gemm_bf16_nt(&picked, self.lm_head.as_ref().unwrap_or(&self.embed), &logits16, n, v, h)?;
        let logits = dev.alloc(n * v * 4)?;
        kernels::cast_bf16_to_f32(dev, &logits16, &logits, n * v)?;
        let mut out: Vec<f32> = dev.download(&logits)?;
        out.truncate(n * v);
        Ok(out)
    }
}

/// Logits `[positions, vocab]` of one sequence prefilled in one chunk (like
/// `cli::logits::sequence_logits` on the CPU): every position, or the last one only.
pub fn sequence_logits(model: &CudaModel, tokens: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
    let max = model.config.max_position_embeddings;
    if tokens.is_empty() {
        bail!("no tokens");
    }
    if tokens.len() > max {
        bail!("{} tokens exceed the model's context of {max}", tokens.len());
    }
    let block_size = 16;
    let blocks = tokens.len().div_ceil(block_size);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut cache = model.new_cache(blocks, block_size)?;
    let hidden = model.forward_hidden(&mut cache, &[SeqChunk { tokens, start_pos: 0, table: &table }])?;
    let rows: Vec<usize> = if all_positions { (0..tokens.len()).collect() } else { vec![tokens.len() - 1] };
    let v = model.config.vocab_size;
    Ok(model.logits(&hidden, &rows)?.chunks_exact(v).map(|r| r.to_vec()).collect())
}
