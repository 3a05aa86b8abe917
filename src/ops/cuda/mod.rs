//! The CUDA backend: bf16 weights and activations in device memory, the hand-written kernels of
//! `kernels/*.cu` launched by name, cuBLASLt (`Device::gemm_bf16_nt`) for the linear layers. It
//! is written once on the device layer (src/device/), so interpret mode (the kernels compiled by
//! g++ and run on the CPU with CUDA semantics) exercises the launch code, buffer management and
//! kernels that a GPU runs.
//!
//! One launcher file per kernel file (`norm.rs` ↔ kernels/rmsnorm.cu, …); `CudaOps` adapts them to
//! the `Ops` interface. The forward's fusions: the q/k biases are added inside `rope_qk_bf16`, the
//! v bias inside `kv_cache_write_bf16`, and the residual add inside `rmsnorm_residual_bf16`; the
//! q/k/v and gate/up projections are one GEMM each over a view of their consecutive weights
//! (`param_span`: `DeviceParams::span`); q|k|v is split by `split.rs` (kernels/split_cols.cu),
//! gate|up read in place by SwiGLU and its backward.
//!
//! Training (issue 13): `packed_batch` uploads the packing (`PackedBatch`), and attention over
//! packed sequences runs kernels/attention_packed{,_backward}.cu (`attention_packed.rs`; its LSE
//! tensor is f32, not bf16: see `attention_packed`). The element-wise and norm backward kernels,
//! the backward GEMMs (`Device::gemm_bf16_nn`, `gemm_bf16_tn_acc_f32`), the fused lm_head log-prob
//! and the GRPO per-token loss (`logprob.rs`, `grpo_loss.rs`) and AdamW run here too;
//! activation tensors and their gradients are bf16, parameter gradients, AdamW moments and master
//! weights f32 `DeviceParams` (every buffer tagged with its type; launchers refuse a wrong one by
//! name).
//!
//! Sampling runs on the device too (kernels/sample.cu, `sample.rs`): `sample` draws from the
//! rows' bf16 logits (the lm_head GEMM's output) bit for bit as the CPU reference does on the
//! same values, and only each row's token and log-prob come to the host.
//!
//! Decode steps (one token per sequence, each drawn) run on persistent per-bucket buffers and
//! replay a CUDA graph of the forward, the lm_head GEMM and the sampler (`decode_graphs.rs`,
//! through `Ops::persistent_step`); prefill and mixed steps allocate per step.
pub mod attention;
pub mod attention_decode;
pub mod attention_packed;
pub mod attention_paged;
pub mod attention_prefill;
pub mod adamw;
pub mod add;
pub mod cast;
pub mod colsum;
pub mod decode_graphs;
pub mod embedding;
pub mod embedding_backward;
pub mod grpo_loss;
pub mod kv_cache_write;
mod launch;
pub mod logprob;
pub mod meta;
pub mod norm;
pub mod params;
pub mod rmsnorm_backward;
pub mod rope;
pub mod rope_backward;
pub mod sample;
pub mod split;
pub mod swiglu;
pub mod swiglu_backward;

pub use attention::AttentionPlan;
pub use attention_packed::PackedPlan;
pub use attention_paged::paged_attention;
pub use cast::{cast_bf16_to_f32, cast_f32_to_bf16};
pub use embedding::embedding_gather;
pub use embedding_backward::{embedding_backward, EmbedGradPlan};
pub use kv_cache_write::kv_cache_write;
pub use meta::TokenMeta;
pub use norm::rmsnorm_residual;
pub use params::{DeviceParams, SpanView, SpanViewMut};
pub use rmsnorm_backward::rmsnorm_backward;
pub use rope::rope_qk;
pub use rope_backward::rope_qk_backward;
pub use swiglu::silu_mul;
pub use swiglu_backward::silu_mul_backward;

use super::grpo::{GrpoConfig, GrpoOutput, GrpoTokens};
use super::{AdamWStep, Draw, LogProbShape, Ops, Sampled, TokenLogProbs};
use crate::device::{Buffer, DType, Device};
use crate::model::{ModelConfig, SeqChunk, Transformer};
use decode_graphs::{DecodeCounters, DecodeMode, DecodeWorkspaces};
use crate::params::{HostParams, ParamId, ParamTable};
use anyhow::{anyhow, bail, ensure, Result};
use std::sync::Arc;

/// The CUDA backend on one device (a GPU, or interpret mode).
/// Cloning shares the device (its context and stream): a policy and its frozen reference model
/// on one GPU, say.
#[derive(Clone)]
pub struct CudaOps {
    pub dev: Arc<Device>,
    /// How decode steps run (`decode_graphs.rs`); None: as `SCALERL_CUDA_GRAPHS` says.
    decode_mode: Option<DecodeMode>,
    decode_counters: Arc<DecodeCounters>,
}

impl CudaOps {
    pub fn new(dev: Device) -> Self {
        CudaOps { dev: Arc::new(dev), decode_mode: None, decode_counters: Arc::default() }
    }
}

/// The paged KV cache in device memory: per layer, K and V as
/// `[num_blocks, block_size, kv_heads, head_dim]` bf16 (the layout of `ops::cpu::KvCache`).
/// `num_blocks` counts one block more than the engine asked for: the last, `pad_block`, is the
/// scratch slot the padded rows of a decode bucket write to (src/ops/cuda/decode_graphs.rs); no
/// block table of a sequence may name it. The decode workspaces live here too: their graphs bake
/// in this cache's addresses.
pub struct DeviceKvCache {
    pub num_blocks: usize,
    pub block_size: usize,
    pub k: Vec<Buffer>,
    pub v: Vec<Buffer>,
    pub pad_block: usize,
    decode: DecodeWorkspaces,
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
    let out = dev.alloc(values.len() * 2)?.typed(DType::Bf16);
    cast_f32_to_bf16(dev, &staging, &out, values.len())?;
    Ok(out)
}

impl Ops for CudaOps {
    type Tensor = Buffer;
    type Params = DeviceParams;
    type Param = Buffer;
    type Cache = DeviceKvCache;
    type Batch = CudaBatch;
    type Span<'a> = SpanView<'a>;
    type SpanMut<'a> = SpanViewMut<'a>;

    fn name(&self) -> String {
        self.dev.name()
    }

    fn zeros(&self, n: usize) -> Result<Buffer> {
        let b = self.dev.alloc(n * 2)?.typed(DType::Bf16);
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
        let mut out = self.dev.alloc(t.len_bytes())?;
        if let Some(d) = t.dtype() {
            out = out.typed(d);
        }
        self.dev.copy(t, &out, t.len_bytes())?;
        Ok(out)
    }

    fn param<'a>(&self, p: &'a DeviceParams, id: ParamId) -> &'a Buffer {
        &p.views[id.0]
    }

    fn param_mut<'a>(&self, p: &'a mut DeviceParams, id: ParamId) -> &'a mut Buffer {
        &mut p.views[id.0]
    }

    fn param_span<'a>(&self, p: &'a DeviceParams, first: ParamId, last: ParamId) -> Result<SpanView<'a>> {
        SpanView::new(p, first, last)
    }

    fn param_span_mut<'a>(&self, p: &'a mut DeviceParams, first: ParamId, last: ParamId) -> Result<SpanViewMut<'a>> {
        SpanViewMut::new(p, first, last)
    }

    /// f32: gradients and AdamW moments.
    fn zeros_params(&self, table: &Arc<ParamTable>) -> Result<DeviceParams> {
        DeviceParams::zeros(&self.dev, table, DType::F32)
    }

    fn new_cache(&self, c: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<DeviceKvCache> {
        // Uninitialised: only positions written by a forward are ever read. One block more for
        // the decode buckets' padded rows.
        let pad_block = num_blocks;
        let num_blocks = num_blocks + 1;
        let bytes = num_blocks * block_size * c.kv_dim() * 2;
        let alloc = || (0..c.num_layers).map(|_| self.dev.alloc(bytes)).collect::<Result<Vec<_>>>();
        Ok(DeviceKvCache { num_blocks, block_size, k: alloc()?, v: alloc()?, pad_block, decode: DecodeWorkspaces::default() })
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
        if meta.blocks_used > cache.pad_block {
            bail!("a block table names block {} of a {}-block cache", meta.blocks_used - 1, cache.pad_block);
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

    /// The packed forward's v bias (the paged forward fuses the biases into rope_qk and
    /// kv_cache_write).
    fn add_bias(&self, y: &mut Buffer, b: &Buffer, rows: usize, n: usize) -> Result<()> {
        add::add_bias(&self.dev, y, b, rows, n)
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

    fn split_cols(&self, src: &Buffer, parts: &mut [&mut Buffer], rows: usize, widths: &[usize]) -> Result<()> {
        split::split_cols(&self.dev, src, &parts.iter().map(|p| &**p).collect::<Vec<_>>(), rows, widths)
    }

    fn swiglu(&self, gate_up: &Buffer, out: &mut Buffer, rows: usize, inter: usize) -> Result<()> {
        swiglu::silu_mul_fused(&self.dev, gate_up, out, rows, inter)
    }

    /// Decode steps on the persistent per-bucket buffers, as CUDA graphs (`decode_graphs.rs`).
    fn persistent_step(model: &Transformer<Self>, cache: &mut DeviceKvCache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Option<Vec<Option<Sampled>>>> {
        decode_graphs::decode_step(model, cache, chunks, draws)
    }

    /// The rows' f32 logits (`device_logits`), downloaded.
    fn logits(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig) -> Result<Vec<f32>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.device_logits(hidden, rows, lm_head, c)?;
        let mut out: Vec<f32> = self.dev.download(&logits)?;
        out.truncate(rows.len() * c.vocab_size);
        Ok(out)
    }

    /// kernels/sample.cu draws from the rows' bf16 logits as the lm_head GEMM wrote them (bit
    /// for bit the CPU reference's draw on the same values, widened); only each row's token and
    /// log-prob come to the host.
    fn sample(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig, draws: &[Draw]) -> Result<Vec<Sampled>> {
        ensure!(rows.len() == draws.len(), "{} rows to sample with {} draws", rows.len(), draws.len());
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let logits = self.device_logits_bf16(hidden, rows, lm_head, c)?;
        sample::sample(&self.dev, &logits, c.vocab_size, draws, rows)
    }

    fn add(&self, x: &mut Buffer, y: &Buffer) -> Result<()> {
        ensure!(x.len_bytes() == y.len_bytes(), "add: tensors of {} and {} bytes", x.len_bytes(), y.len_bytes());
        add::add(&self.dev, x, y, x.len_bytes() / 2)
    }

    fn linear_backward_input(&self, dy: &Buffer, w: &Buffer, dx: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.dev.gemm_bf16_nn(dy, w, dx, m, n, k)
    }

    fn linear_backward_weight(&self, dy: &Buffer, x: &Buffer, dw: &mut Buffer, m: usize, n: usize, k: usize) -> Result<()> {
        self.dev.gemm_bf16_tn_acc_f32(dy, x, dw, m, n, k)
    }

    fn bias_backward(&self, dy: &Buffer, db: &mut Buffer, rows: usize, n: usize) -> Result<()> {
        colsum::bias_backward(&self.dev, dy, db, rows, n)
    }

    fn rmsnorm_backward(&self, x: &Buffer, w: &Buffer, dy: &Buffer, dx: &mut Buffer, dw: &mut Buffer, rows: usize, h: usize, eps: f32) -> Result<()> {
        rmsnorm_backward(&self.dev, x, w, dy, dx, dw, rows, h, eps)
    }

    fn rope_backward(&self, b: &CudaBatch, dq: &mut Buffer, dk: &mut Buffer, c: &ModelConfig) -> Result<()> {
        rope_qk_backward(&self.dev, dq, dk, &b.meta, c.num_heads, c.num_kv_heads, c.head_dim, c.rope_theta)
    }

    fn concat_cols(&self, parts: &[&Buffer], dst: &mut Buffer, rows: usize, widths: &[usize]) -> Result<()> {
        split::concat_cols(&self.dev, parts, dst, rows, widths)
    }

    fn swiglu_backward(&self, gate_up: &Buffer, dy: &Buffer, d_gate_up: &mut Buffer, rows: usize, inter: usize) -> Result<()> {
        swiglu_backward::silu_mul_fused_backward(&self.dev, gate_up, dy, d_gate_up, rows, inter)
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

    /// The rows are grouped by token on the host (`EmbedGradPlan`) from the batch's ids: one
    /// small download (4 bytes a row), so one synchronisation per backward, at its very end.
    fn embed_backward(&self, b: &CudaBatch, dx: &Buffer, d_table: &mut Buffer, c: &ModelConfig) -> Result<()> {
        let ids: Vec<i32> = self.dev.download(&b.ids)?;
        let tokens: Vec<u32> = ids[..b.meta.tokens].iter().map(|&t| t as u32).collect();
        let plan = EmbedGradPlan::new(&self.dev, &tokens, c.vocab_size)?;
        embedding_backward(&self.dev, &plan, dx, d_table, c.hidden_size, c.vocab_size)
    }

    fn logprobs(&self, hidden: &Buffer, rows: &[usize], targets: &[u32], lm_head: &Buffer, sh: LogProbShape) -> Result<TokenLogProbs> {
        logprob::ops_logprobs(&self.dev, hidden, rows, targets, lm_head, sh)
    }

    /// `d_lm_head` must be an f32 `[vocab, hidden]` buffer: the lm_head's view of an f32 gradient
    /// set (`zeros_params`); a bf16 weight view is refused.
    fn logprobs_backward(
        &self,
        hidden: &Buffer,
        rows: &[usize],
        targets: &[u32],
        lm_head: &Buffer,
        fwd: &TokenLogProbs,
        d_logp: &[f32],
        d_entropy: Option<&[f32]>,
        sh: LogProbShape,
        d_hidden: &mut Buffer,
        d_lm_head: &mut Buffer,
    ) -> Result<()> {
        logprob::ops_logprobs_backward(&self.dev, hidden, rows, targets, lm_head, fwd, d_logp, d_entropy, sh, d_hidden, d_lm_head)
    }

    fn grpo_loss(&self, cfg: &GrpoConfig, x: &GrpoTokens) -> Result<GrpoOutput> {
        grpo_loss::ops_grpo_loss(&self.dev, cfg, x)
    }

    /// Σ g² in f64 by a deterministic two-stage reduction (8 bytes come back to the host, which
    /// skips the step when it is not finite).
    fn sum_squares(&self, g: &DeviceParams) -> Result<f64> {
        f32_set(g, "sum_squares", "gradients")?;
        adamw::sum_squares(&self.dev, g.flat(), g.len())
    }

    fn scale_params(&self, g: &mut DeviceParams, s: f32) -> Result<()> {
        f32_set(g, "scale_params", "gradients")?;
        adamw::scale(&self.dev, g.flat(), g.len(), s)
    }

    fn zero_params(&self, g: &mut DeviceParams) -> Result<()> {
        self.dev.zero(g.flat())
    }

    /// One bucket of the f32 gradient set in one collective: NCCL's in-place all-reduce on a GPU
    /// (on its own stream), through the host for the in-process group of interpret mode.
    fn all_reduce_params_range(&self, comm: &mut dyn crate::dist::Collective, g: &mut DeviceParams, range: std::ops::Range<usize>) -> Result<()> {
        f32_set(g, "all_reduce_params_range", "gradients")?;
        comm.all_reduce_bucket(&self.dev, &g.flat().view(range.start * 4, range.len() * 4)?)
    }

    fn finish_all_reduce(&self, comm: &mut dyn crate::dist::Collective) -> Result<()> {
        comm.finish_buckets(&self.dev)
    }

    /// `w` is the f32 master copy (`DeviceParams::upload_f32`); the bf16 copy the forward reads
    /// is refreshed with `DeviceParams::cast_from` (or in the same pass through
    /// `adamw::adamw_update` with `w_bf16`).
    fn adamw_update(&self, w: &mut DeviceParams, g: &DeviceParams, m: &mut DeviceParams, v: &mut DeviceParams, s: &AdamWStep) -> Result<()> {
        for (p, what) in [(&*w, "weights (the f32 master copy)"), (g, "gradients"), (&*m, "first moments"), (&*v, "second moments")] {
            f32_set(p, "adamw_update", what)?;
            w.check_same(p, what)?;
        }
        adamw::adamw_update(&self.dev, w.flat(), g.flat(), m.flat(), v.flat(), None, w.len(), s)
    }

    fn needs_master(&self) -> bool {
        true
    }

    fn params_from_host(&self, h: &HostParams, master: bool) -> Result<DeviceParams> {
        if master {
            DeviceParams::upload_f32(&self.dev, h)
        } else {
            DeviceParams::upload(&self.dev, h)
        }
    }

    fn params_to_host(&self, p: &DeviceParams) -> Result<HostParams> {
        p.download(&self.dev)
    }

    fn sync_weights(&self, master: &DeviceParams, weights: &mut DeviceParams) -> Result<()> {
        weights.cast_from(&self.dev, master)
    }

    fn memory(&self) -> Option<crate::device::MemStats> {
        Some(self.dev.memory())
    }

    fn reset_peak_memory(&self) {
        self.dev.reset_peak()
    }
}

/// Fails unless `p` is an f32 parameter set.
fn f32_set(p: &DeviceParams, op: &str, what: &str) -> Result<()> {
    ensure!(p.dtype() == DType::F32, "{op}: the {what} are a {} parameter set; the optimizer works on f32 sets", p.dtype());
    Ok(())
}

impl CudaOps {
    /// The chosen rows of `hidden` through the lm_head: [rows × vocab] bf16 on the device. The
    /// rows are picked with the embedding-gather kernel (a row copy) and go through the bf16
    /// lm_head GEMM.
    fn device_logits_bf16(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig) -> Result<Buffer> {
        let dev = &self.dev;
        let (h, v, n) = (c.hidden_size, c.vocab_size, rows.len());
        let avail = hidden.len_bytes() / (2 * h);
        let ids = rows
            .iter()
            .map(|&r| if r < avail { Ok(r as i32) } else { bail!("row {r} of {avail} hidden rows") })
            .collect::<Result<Vec<i32>>>()?;
        let ids = dev.upload(&ids)?;
        let picked = dev.alloc(n * h * 2)?;
        embedding_gather(dev, &ids, hidden, &picked, n, h, avail)?;
        let logits16 = dev.alloc(n * v * 2)?.typed(DType::Bf16);
        dev.gemm_bf16_nt(&picked, lm_head, &logits16, n, v, h)?;
        Ok(logits16)
    }

    /// `device_logits_bf16`, widened to f32 on the device.
    fn device_logits(&self, hidden: &Buffer, rows: &[usize], lm_head: &Buffer, c: &ModelConfig) -> Result<Buffer> {
        let n = rows.len() * c.vocab_size;
        let logits16 = self.device_logits_bf16(hidden, rows, lm_head, c)?;
        let logits = self.dev.alloc(n * 4)?.typed(DType::F32);
        cast_bf16_to_f32(&self.dev, &logits16, &logits, n)?;
        Ok(logits)
    }
}
