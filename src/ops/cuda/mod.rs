//! The CUDA backend: bf16 weights and activations in device memory, the hand-written kernels of
//! `kernels/*.cu` launched by name, cuBLASLt (`Device::gemm_bf16_nt`) for the linear layers. It
//! is written once on the device layer (src/device/), so interpret mode (the kernels compiled by
//! g++ and run on the CPU with CUDA semantics) exercises the launch code, buffer management and
//! kernels that a GPU runs.
//!
//! One launcher file per kernel file (`norm.rs` ↔ kernels/rmsnorm.cu, …); `CudaOps` adapts them to
//! the `Ops` interface. The forward's fusions: the q/k biases are added inside `rope_qk_bf16`, the
//! v bias inside `kv_cache_write_bf16`, and the residual add inside `rmsnorm_residual_bf16`.
//!
//! Training: `packed_batch` uploads the packing (`PackedBatch`), and attention over packed
//! sequences runs kernels/attention_packed{,_backward}.cu (`attention_packed.rs`); its LSE tensor is
//! f32, not bf16 (see `attention_packed`).
//!
//! Not yet here (their ops return an error saying so): the other backward kernels, the fused
//! lm_head log-prob and the optimizer (the training-kernels issue), and the
//! device sampler (the rollout issue; until then `sample` downloads the chosen rows' f32 logits
//! and draws on the host with the CPU reference sampler).
pub mod attention;
pub mod attention_decode;
pub mod attention_packed;
pub mod attention_paged;
pub mod attention_prefill;
pub mod cast;
pub mod embedding;
pub mod kv_cache_write;
mod launch;
pub mod meta;
pub mod norm;
pub mod rope;
pub mod swiglu;

pub use attention::AttentionPlan;
pub use attention_packed::PackedPlan;
pub use attention_paged::paged_attention;
pub use cast::{cast_bf16_to_f32, cast_f32_to_bf16};
pub use embedding::embedding_gather;
pub use kv_cache_write::kv_cache_write;
pub use meta::TokenMeta;
pub use norm::rmsnorm_residual;
pub use rope::rope_qk;
pub use swiglu::silu_mul;

use super::{AdamWStep, Draw, LogProbShape, Ops, Sampled, TokenLogProbs};
use crate::device::{Buffer, Device};
use crate::model::{ModelConfig, SeqChunk};
use crate::params::{HostParams, ParamId, ParamTable};
use anyhow::{anyhow, bail, ensure, Context, Result};
use std::sync::Arc;

/// The CUDA backend on one device (a GPU, or interpret mode).
pub struct CudaOps {
    pub dev: Device,
}

impl CudaOps {
    pub fn new(dev: Device) -> Self {
        CudaOps { dev }
    }
}

/// The error of an op whose kernel is not written yet: never a silent fallback to the CPU.
fn no_kernel(op: &str) -> anyhow::Error {
    anyhow!(
        "`{op}` has no CUDA kernel yet (the training kernels are issue 13): the CUDA backend runs \
         inference only; train with the cpu backend"
    )
}

/// A parameter set in device memory: one flat bf16 buffer laid out by a `ParamTable`, and a view
/// of it per tensor.
pub struct DeviceParams {
    table: Arc<ParamTable>,
    flat: Buffer,
    views: Vec<Buffer>,
}

impl DeviceParams {
    /// `host` in bf16 on `dev` (round to nearest even), one tensor at a time through an f32
    /// staging buffer (so the device never holds an f32 copy of the whole model).
    pub fn upload(dev: &Device, host: &HostParams) -> Result<Self> {
        let table = host.table().clone();
        let flat = dev.alloc(table.total() * 2).with_context(|| format!("allocating the bf16 weights on {}", dev.name()))?;
        let views = table.entries().iter().map(|e| flat.view(e.offset * 2, e.len * 2)).collect::<Result<Vec<_>>>()?;
        let p = DeviceParams { table, flat, views };
        p.write(dev, host)?;
        Ok(p)
    }

    /// Overwrites the values with `host`'s (same table): the trainer's weight sync, in place, so
    /// the device never holds two copies.
    pub fn write(&self, dev: &Device, host: &HostParams) -> Result<()> {
        if !Arc::ptr_eq(&self.table, host.table()) && *self.table != **host.table() {
            bail!("the parameters to upload describe a different model than the copy on {}", dev.name());
        }
        for ((e, values), view) in host.iter().zip(&self.views) {
            let staging = dev.upload(values).with_context(|| format!("uploading `{}` to {}", e.name, dev.name()))?;
            cast_f32_to_bf16(dev, &staging, view, e.len).with_context(|| format!("casting `{}` to bf16", e.name))?;
        }
        Ok(())
    }

    pub fn table(&self) -> &Arc<ParamTable> {
        &self.table
    }

    /// The flat buffer (every tensor, table order, bf16).
    pub fn flat(&self) -> &Buffer {
        &self.flat
    }
}

/// The paged KV cache in device memory: per layer, K and V as
/// `[num_blocks, block_size, kv_heads, head_dim]` bf16 (the layout of `ops::cpu::KvCache`).
pub struct DeviceKvCache {
    pub num_blocks: usize,
    pub block_size: usize,
    pub k: Vec<Buffer>,
    pub v: Vec<Buffer>,
}

/// One forward's rows on the device: token ids, the metadata every paged kernel reads, and the
/// attention kernel chosen for the batch's shape.
pub struct CudaBatch {
    pub ids: Buffer,
    pub meta: TokenMeta,
    pub attention: AttentionPlan,
    /// Whole sequences packed for training (`packed_batch`); None for the paged rows of inference.
    pub packed: Option<PackedBatch>,
}

/// The packed part of a training batch: the attention plan (cu_seqlens and work lists) and the
/// backward's `[T, num_heads]` f32 delta scratch, reused by every layer. `meta` then holds each
/// row's position (0.. per sequence) and sequence; its block tables are placeholders (one block
/// per sequence) that no kernel reads: the paged ops refuse a packed batch.
pub struct PackedBatch {
    pub plan: PackedPlan,
    pub delta: Buffer,
}

impl CudaBatch {
    fn packed(&self) -> Result<&PackedBatch> {
        self.packed.as_ref().ok_or_else(|| anyhow!("packed-sequence attention over a paged batch"))
    }

    fn paged(&self) -> Result<()> {
        ensure!(self.packed.is_none(), "paged attention over a packed batch");
        Ok(())
    }
}

/// `values` (f32) on `dev` as bf16.
fn upload_bf16(dev: &Device, values: &[f32]) -> Result<Buffer> {
    let staging = dev.upload(values)?;
    let out = dev.alloc(values.len() * 2)?;
    cast_f32_to_bf16(dev, &staging, &out, values.len())?;
    Ok(out)
}

impl Ops for CudaOps {
    type Tensor = Buffer;
    type Params = DeviceParams;
    type Param = Buffer;
    type Cache = DeviceKvCache;
    type Batch = CudaBatch;

    fn name(&self) -> String {
        self.dev.name()
    }

    fn zeros(&self, n: usize) -> Result<Buffer> {
        let b = self.dev.alloc(n * 2)?;
        self.dev.zero(&b)?;
        Ok(b)
    }

    fn upload(&self, values: &[f32]) -> Result<Buffer> {
        upload_bf16(&self.dev, values)
    }

    fn download(&self, t: &Buffer) -> Result<Vec<f32>> {
        Ok(self.dev.download::<half::bf16>(t)?.iter().map(|v| v.to_f32()).collect())
    }

    fn copy(&self, t: &Buffer) -> Result<Buffer> {
        let out = self.dev.alloc(t.len_bytes())?;
        self.dev.copy(t, &out, t.len_bytes())?;
        Ok(out)
    }

    fn param<'a>(&self, p: &'a DeviceParams, id: ParamId) -> &'a Buffer {
        &p.views[id.0]
    }

    fn param_mut<'a>(&self, p: &'a mut DeviceParams, id: ParamId) -> &'a mut Buffer {
        &mut p.views[id.0]
    }

    fn zeros_params(&self, _table: &Arc<ParamTable>) -> Result<DeviceParams> {
        Err(no_kernel("gradient buffers (f32 parameter sets)"))
    }

    fn new_cache(&self, c: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<DeviceKvCache> {
        // Uninitialised: only positions written by a forward are ever read.
        let bytes = num_blocks * block_size * c.kv_dim() * 2;
        let alloc = || (0..c.num_layers).map(|_| self.dev.alloc(bytes)).collect::<Result<Vec<_>>>();
        Ok(DeviceKvCache { num_blocks, block_size, k: alloc()?, v: alloc()? })
    }

    fn paged_batch(&self, c: &ModelConfig, cache: &DeviceKvCache, chunks: &[SeqChunk]) -> Result<CudaBatch> {
        let mut ids = Vec::new();
        for ch in chunks {
            for &t in ch.tokens {
                if t as usize >= c.vocab_size {
                    bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
                }
                ids.push(t as i32);
            }
        }
        ensure!(!ids.is_empty(), "forward of an empty batch");
        let seqs: Vec<(usize, usize, &[u32])> = chunks.iter().map(|ch| (ch.start_pos, ch.tokens.len(), ch.table)).collect();
        let meta = TokenMeta::upload(&self.dev, &seqs, cache.block_size)?;
        if meta.blocks_used > cache.num_blocks {
            bail!("a block table names block {} of a {}-block cache", meta.blocks_used - 1, cache.num_blocks);
        }
        let attention = AttentionPlan::new(&self.dev, &meta, c.num_heads, c.num_kv_heads, c.head_dim)?;
        Ok(CudaBatch { ids: self.dev.upload(&ids)?, meta, attention, packed: None })
    }

    fn packed_batch(&self, c: &ModelConfig, seqs: &[&[u32]]) -> Result<CudaBatch> {
        let mut ids = Vec::new();
        for s in seqs {
            if s.is_empty() {
                bail!("a training sequence is empty");
            }
            if let Some(&t) = s.iter().find(|&&t| t as usize >= c.vocab_size) {
                bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
            }
            ids.extend(s.iter().map(|&t| t as i32));
        }
        ensure!(!ids.is_empty(), "forward of an empty batch");
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        // Positions 0.. per sequence for RoPE; a one-block placeholder table as long as the
        // longest sequence (never read: the paged ops refuse this batch).
        let longest = lens.iter().copied().max().unwrap_or(1);
        let zero = [0u32];
        let rows: Vec<(usize, usize, &[u32])> = lens.iter().map(|&l| (0, l, &zero[..])).collect();
        let meta = TokenMeta::upload(&self.dev, &rows, longest)?;
        let plan = PackedPlan::new(&self.dev, &lens)?;
        let delta = self.dev.alloc(ids.len() * c.num_heads * 4)?;
        Ok(CudaBatch {
            ids: self.dev.upload(&ids)?,
            meta,
            attention: AttentionPlan::Plain,
            packed: Some(PackedBatch { plan, delta }),
        })
    }

    fn embed(&self, b: &CudaBatch, table: &Buffer, out: &mut Buffer, c: &ModelConfig) -> Result<()> {
        embedding_gather(&self.dev, &b.ids, table, out, b.meta.tokens, c.hidden_size, c.vocab_size)
    }

    fn add_rmsnorm(&self, residual: &mut Buffer, x: Option<&Buffer>, w: &Buffer, out: &mut Buffer, rows: usize, h: usize, eps: f32) -> Result<()> {
        rmsnorm_residual(&self.dev, x, residual, w, out, rows, h, eps)
    }

    fn linear(&self, x: &Buffer, w: &Buffer, y: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.dev.gemm_bf16_nt(x, w, y, m, n, k)
    }

    fn add_bias(&self, _y: &mut Buffer, _b: &Buffer, _rows: usize, _n: usize) -> Result<()> {
        // The paged forward never needs it: rope_qk and kv_cache_write add the biases.
        Err(no_kernel("add_bias"))
    }

    fn rope_qk(&self, b: &CudaBatch, q: &mut Buffer, k: &mut Buffer, qb: Option<&Buffer>, kb: Option<&Buffer>, c: &ModelConfig) -> Result<()> {
        rope_qk(&self.dev, q, k, qb, kb, &b.meta, c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta)
    }

    fn kv_write(&self, b: &CudaBatch, cache: &mut DeviceKvCache, layer: usize, k: &Buffer, v: &Buffer, vb: Option<&Buffer>, c: &ModelConfig) -> Result<()> {
        b.paged()?;
        kv_cache_write(&self.dev, k, v, vb, &cache.k[layer], &cache.v[layer], &b.meta, cache.num_blocks, c.kv_dim())
    }

    fn attention_paged(&self, b: &CudaBatch, cache: &DeviceKvCache, layer: usize, q: &Buffer, out: &mut Buffer, c: &ModelConfig) -> Result<()> {
        b.paged()?;
        let (kc, vc) = (&cache.k[layer], &cache.v[layer]);
        b.attention.run(&self.dev, q, kc, vc, out, &b.meta, cache.num_blocks, c.num_heads, c.num_kv_heads, c.head_dim)
    }

    /// The LSE is f32 `[T, num_heads]` (bf16 would put a 2^-8 relative error into every P of the
    /// backward): a `lse` tensor too small for that (one from `zeros(T · num_heads)`, sized for
    /// bf16) is replaced by an f32 buffer here, and the backward reads it as f32. Download it
    /// with `Device::download::<f32>`, not `Ops::download`.
    fn attention_packed(&self, b: &CudaBatch, q: &Buffer, k: &Buffer, v: &Buffer, out: &mut Buffer, lse: &mut Buffer, c: &ModelConfig) -> Result<()> {
        let p = b.packed()?;
        let bytes = p.plan.tokens() * c.num_heads * 4;
        if lse.len_bytes() < bytes {
            *lse = self.dev.alloc(bytes)?;
        }
        attention_packed::attention_packed(&self.dev, &p.plan, q, k, v, out, lse, c.num_heads, c.num_kv_heads, c.head_dim)
    }

    fn swiglu(&self, gate: &Buffer, up: &Buffer, out: &mut Buffer, n: usize) -> Result<()> {
        silu_mul(&self.dev, gate, up, out, n)
    }

    /// The rows are picked with the embedding-gather kernel (a row copy), go through the bf16
    /// lm_head GEMM, and come back as f32.
    fn logits(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig) -> Result<Vec<f32>> {
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
        embedding_gather(dev, &ids, hidden, &picked, n, h, avail)?;
        let logits16 = dev.alloc(n * v * 2)?;
        dev.gemm_bf16_nt(&picked, lm_head, &logits16, n, v, h)?;
        let logits = dev.alloc(n * v * 4)?;
        cast_bf16_to_f32(dev, &logits16, &logits, n * v)?;
        let mut out: Vec<f32> = dev.download(&logits)?;
        out.truncate(n * v);
        Ok(out)
    }

    /// Until the device sampler (the rollout issue): the rows' logits come to the host and the
    /// CPU reference sampler draws from them. Only tokens and log-probs leave this op.
    fn sample(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig, draws: &[Draw]) -> Result<Vec<Sampled>> {
        ensure!(rows.len() == draws.len(), "{} rows to sample with {} draws", rows.len(), draws.len());
        let logits = self.logits(hidden, rows, lm_head, c)?;
        Ok(logits.chunks_exact(c.vocab_size).zip(draws).map(|(row, d)| super::cpu::sample::sample_row(row, d)).collect())
    }

    fn add(&self, _x: &mut Buffer, _y: &Buffer) -> Result<()> {
        Err(no_kernel("add (backward)"))
    }

    fn linear_backward_input(&self, _dy: &Buffer, _w: &Buffer, _dx: &mut Buffer, _m: usize, _n: usize, _k: usize) -> Result<()> {
        Err(no_kernel("linear_backward_input"))
    }

    fn linear_backward_weight(&self, _dy: &Buffer, _x: &Buffer, _dw: &mut Buffer, _m: usize, _n: usize, _k: usize) -> Result<()> {
        Err(no_kernel("linear_backward_weight"))
    }

    fn bias_backward(&self, _dy: &Buffer, _db: &mut Buffer, _rows: usize, _n: usize) -> Result<()> {
        Err(no_kernel("bias_backward"))
    }

    fn rmsnorm_backward(&self, _x: &Buffer, _w: &Buffer, _dy: &Buffer, _dx: &mut Buffer, _dw: &mut Buffer, _rows: usize, _h: usize, _eps: f32) -> Result<()> {
        Err(no_kernel("rmsnorm_backward"))
    }

    fn rope_backward(&self, _b: &CudaBatch, _dq: &mut Buffer, _dk: &mut Buffer, _c: &ModelConfig) -> Result<()> {
        Err(no_kernel("rope_backward"))
    }

    fn swiglu_backward(&self, _gate: &Buffer, _up: &Buffer, _dy: &Buffer, _dgate: &mut Buffer, _dup: &mut Buffer, _n: usize) -> Result<()> {
        Err(no_kernel("swiglu_backward"))
    }

    fn attention_packed_backward(
        &self,
        b: &CudaBatch,
        q: &Buffer,
        k: &Buffer,
        v: &Buffer,
        out: &Buffer,
        lse: &Buffer,
        dout: &Buffer,
        dq: &mut Buffer,
        dk: &mut Buffer,
        dv: &mut Buffer,
        c: &ModelConfig,
    ) -> Result<()> {
        let p = b.packed()?;
        let (nh, nkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        attention_packed::attention_packed_backward(&self.dev, &p.plan, q, k, v, out, lse, dout, &p.delta, dq, dk, dv, nh, nkv, d)
    }

    fn embed_backward(&self, _b: &CudaBatch, _dx: &Buffer, _d_table: &mut Buffer, _c: &ModelConfig) -> Result<()> {
        Err(no_kernel("embed_backward"))
    }

    fn logprobs(&self, _hidden: &Buffer, _rows: &[usize], _targets: &[u32], _lm_head: &Buffer, _sh: LogProbShape) -> Result<TokenLogProbs> {
        Err(no_kernel("logprobs (the fused lm_head log-prob)"))
    }

    fn logprobs_backward(
        &self,
        _hidden: &Buffer,
        _rows: &[usize],
        _targets: &[u32],
        _lm_head: &Buffer,
        _fwd: &TokenLogProbs,
        _d_logp: &[f32],
        _d_entropy: Option<&[f32]>,
        _sh: LogProbShape,
        _d_hidden: &mut Buffer,
        _d_lm_head: &mut Buffer,
    ) -> Result<()> {
        Err(no_kernel("logprobs_backward"))
    }

    fn sum_squares(&self, _g: &DeviceParams) -> Result<f64> {
        Err(no_kernel("the gradient norm"))
    }

    fn scale_params(&self, _g: &mut DeviceParams, _s: f32) -> Result<()> {
        Err(no_kernel("gradient clipping"))
    }

    fn zero_params(&self, _g: &mut DeviceParams) -> Result<()> {
        Err(no_kernel("zeroing gradients"))
    }

    fn adamw_update(&self, _w: &mut DeviceParams, _g: &DeviceParams, _m: &mut DeviceParams, _v: &mut DeviceParams, _s: &AdamWStep) -> Result<()> {
        Err(no_kernel("adamw_update"))
    }
}
