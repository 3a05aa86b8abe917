//! The numerics of the model, forward and backward, behind one interface (`Ops`) that the
//! transformer (src/model/transformer.rs) is written once against. Two implementations:
//!
//! - `cpu::CpuOps` — the f32 reference: plain, readable Rust (rayon for threads). Every kernel
//!   is checked against it, and it runs everything on a machine with no GPU.
//! - `cuda::CudaOps` — bf16 weights and activations, the hand-written kernels of `kernels/*.cu`
//!   and cuBLASLt, on the device layer: a GPU, or interpret mode (the same kernels run on the
//!   CPU with CUDA semantics).
//!
//! Where each op lives (CPU reference · kernel · launcher; the backward next to the forward):
//!
//! | op                         | CPU reference (src/ops/cpu/) | kernel (kernels/)            | launcher (src/ops/cuda/) |
//! |----------------------------|------------------------------|------------------------------|--------------------------|
//! | embedding + backward       | embedding.rs                 | embedding.cu, embedding_backward.cu | embedding.rs, embedding_backward.rs |
//! | RMSNorm (+residual), bwd   | norm.rs                      | rmsnorm.cu, rmsnorm_backward.cu (+ colsum.cu) | norm.rs, rmsnorm_backward.rs |
//! | linear, NN/TN backward     | linear.rs (matmul.rs, gemm.rs) | cuBLASLt (device/cuda.rs)  | (Device::gemm_bf16_nt, _nn, _tn_acc_f32) |
//! | bias add, bias backward    | matmul.rs, linear.rs         | add.cu, colsum.cu            | add.rs, colsum.rs        |
//! | add (residual, gradients)  | norm.rs                      | add.cu                       | add.rs                   |
//! | split / concat of the fused q|k|v and gate|up columns | split.rs | split_cols.cu    | split.rs                 |
//! | RoPE (+q/k bias), bwd      | rope.rs                      | rope.cu, rope_backward.cu    | rope.rs, rope_backward.rs |
//! | KV-cache write (+v bias)   | kv_cache.rs                  | kv_cache_write.cu            | kv_cache_write.rs        |
//! | attention, paged           | attention.rs                 | attention_prefill.cu, attention_decode.cu, attention_paged.cu | attention*.rs |
//! | attention, packed + LSE, bwd | attention.rs               | attention_packed.cu, attention_packed_backward.cu | attention_packed.rs |
//! | SwiGLU, bwd                | swiglu.rs                    | swiglu.cu, swiglu_backward.cu | swiglu.rs, swiglu_backward.rs |
//! | lm_head log-prob/entropy, bwd | logprob.rs                | logprob.cu                   | logprob.rs               |
//! | GRPO per-token loss        | grpo.rs                      | grpo_loss.cu                 | grpo_loss.rs             |
//! | sampling                   | sample.rs                    | sample.cu (after the lm_head GEMM) | sample.rs          |
//! | AdamW update, grad norm    | adamw.rs                     | adamw.cu                     | adamw.rs                 |
//! | parameter sets (bf16, f32) | (HostParams)                 | cast.cu (master → bf16)      | params.rs                |
//!
//! A "—" is a kernel that does not exist yet (the training-kernels and rollout issues write
//! them): the CUDA implementation of that op returns an error that says so, never a silent
//! fallback to the CPU.
//!
//! Conventions: outputs are `&mut` and overwritten, except weight gradients, which are
//! accumulated (`+=`) so micro-batches and tied tensors add up. Activations are row-major
//! `[rows, cols]`; linear weights keep the PyTorch layout `[out, in]`.

pub mod cpu;
pub mod cuda;
pub mod grpo;

use crate::model::{ModelConfig, SeqChunk, Transformer};
use crate::params::{HostParams, ParamId, ParamTable};
use crate::dist::Collective;
use anyhow::Result;
use grpo::{GrpoConfig, GrpoOutput, GrpoTokens};
use std::sync::Arc;

/// How to draw one token from a row of logits (the CPU reference, which defines the draw
/// exactly, is `cpu::sample::sample_row`; the CUDA backend's is kernels/sample.cu).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches top_p (1 = off),
    /// among those that min_p and top_k kept.
    pub top_p: f32,
    /// Keep the k most likely tokens, with every token tied with the k-th (0 = off).
    pub top_k: usize,
    /// Keep the tokens with p ≥ min_p · p_max (0 = off).
    pub min_p: f32,
    /// The draw's randomness: uniform in [0, 1) (ignored when greedy).
    pub uniform: f64,
}

impl Draw {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == 1
    }

    /// Fails on a parameter outside its range, naming it.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.temperature >= 0.0 && self.temperature.is_finite(),
            "temperature must be a finite number ≥ 0, got {}",
            self.temperature
        );
        anyhow::ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "top_p must be in (0, 1], got {}", self.top_p);
        anyhow::ensure!((0.0..=1.0).contains(&self.min_p), "min_p must be in [0, 1], got {}", self.min_p);
        anyhow::ensure!((0.0..1.0).contains(&self.uniform), "the draw's uniform must be in [0, 1), got {}", self.uniform);
        Ok(())
    }
}

/// A drawn token and its log-prob under softmax(logits / T), before top-k/top-p.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    pub token: u32,
    pub logprob: f32,
}

/// Shapes and settings of the chunked lm_head log-prob (see `cpu::logprob`).
#[derive(Debug, Clone, Copy)]
pub struct LogProbShape {
    /// Hidden size (columns of `hidden` and of the lm_head).
    pub hidden: usize,
    /// Vocabulary size (rows of the lm_head).
    pub vocab: usize,
    pub temperature: f32,
    /// Vocabulary columns per chunk (clamped to 1..=vocab).
    pub chunk: usize,
}

/// Per-row results of the log-prob forward, and the statistics its backward reuses.
#[derive(Debug, Clone)]
pub struct TokenLogProbs {
    /// log p(y | ·) at the temperature.
    pub logp: Vec<f32>,
    /// Entropy of the tempered distribution.
    pub entropy: Vec<f32>,
    /// log Σ_v e^{z_v}.
    pub lse: Vec<f32>,
    /// μ = Σ_v p_v z_v.
    pub mean_z: Vec<f32>,
}

/// The coefficients of one AdamW step, the same for every element (see `cpu::adamw`).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// η / (1 − β1ᵗ)
    pub step_size: f32,
    /// √(1 − β2ᵗ)
    pub bc2_sqrt: f32,
    /// 1 − η λ
    pub decay: f32,
}

/// The numerics of one backend. `Tensor` is an activation (f32 on the CPU, bf16 on the CUDA
/// backend); `Params` a full parameter set in one flat allocation laid out by a `ParamTable`,
/// and `Param` one tensor of it; `Cache` the paged KV storage; `Batch` the layout of one
/// forward's rows (positions, block tables or packed sequences, and what a backend derives from
/// them once per forward, such as the attention plan).
pub trait Ops: Clone {
    type Tensor;
    type Params;
    type Param: ?Sized;
    type Cache;
    type Batch;
    /// A view of consecutive parameters (`param_span`): `&[f32]` on the CPU, a buffer view on
    /// the CUDA backend.
    type Span<'a>: std::ops::Deref<Target = Self::Param>
    where
        Self: 'a;
    type SpanMut<'a>: std::ops::DerefMut<Target = Self::Param>
    where
        Self: 'a;

    /// Where it runs, for logs and errors.
    fn name(&self) -> String;

    // --- memory -------------------------------------------------------------------------
    /// A tensor of `n` elements, all zero.
    fn zeros(&self, n: usize) -> Result<Self::Tensor>;
    fn upload(&self, values: &[f32]) -> Result<Self::Tensor>;
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>>;
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor>;
    fn param<'a>(&self, p: &'a Self::Params, id: ParamId) -> &'a Self::Param;
    fn param_mut<'a>(&self, p: &'a mut Self::Params, id: ParamId) -> &'a mut Self::Param;
    /// The consecutive parameters `first..=last` as one tensor, a view of the flat set (no
    /// copy): the fused q/k/v and gate/up projections' weights, biases and their gradients.
    fn param_span<'a>(&self, p: &'a Self::Params, first: ParamId, last: ParamId) -> Result<Self::Span<'a>>;
    fn param_span_mut<'a>(&self, p: &'a mut Self::Params, first: ParamId, last: ParamId) -> Result<Self::SpanMut<'a>>;
    /// A parameter set of `table`'s shape, all zero (gradients, optimizer moments).
    fn zeros_params(&self, table: &Arc<ParamTable>) -> Result<Self::Params>;

    // --- batch layout ---------------------------------------------------------------------
    fn new_cache(&self, c: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<Self::Cache>;
    /// The rows of chunks that read and extend the paged cache (inference).
    fn paged_batch(&self, c: &ModelConfig, cache: &Self::Cache, chunks: &[SeqChunk]) -> Result<Self::Batch>;
    /// The rows of whole sequences packed one after the other, each at positions 0.. (training).
    fn packed_batch(&self, c: &ModelConfig, seqs: &[&[u32]]) -> Result<Self::Batch>;

    // --- forward ----------------------------------------------------------------------------
    /// `out[r] = table[token of row r]`.
    fn embed(&self, b: &Self::Batch, table: &Self::Param, out: &mut Self::Tensor, c: &ModelConfig) -> Result<()>;
    /// `residual += x` (if given), `out = rmsnorm(residual) · w`, rows of `hidden`.
    #[allow(clippy::too_many_arguments)]
    fn add_rmsnorm(&self, residual: &mut Self::Tensor, x: Option<&Self::Tensor>, w: &Self::Param, out: &mut Self::Tensor, rows: usize, hidden: usize, eps: f32) -> Result<()>;
    /// `y[m, n] = x[m, k] · w[n, k]ᵀ`.
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, x: &Self::Tensor, w: &Self::Param, y: &mut Self::Tensor, m: usize, n: usize, k: usize) -> Result<()>;
    /// `y[r] += b` for every row.
    fn add_bias(&self, y: &mut Self::Tensor, b: &Self::Param, rows: usize, n: usize) -> Result<()>;
    /// q, k ← rope(q + q_bias), rope(k + k_bias) at the rows' positions.
    #[allow(clippy::too_many_arguments)]
    fn rope_qk(&self, b: &Self::Batch, q: &mut Self::Tensor, k: &mut Self::Tensor, q_bias: Option<&Self::Param>, k_bias: Option<&Self::Param>, c: &ModelConfig) -> Result<()>;
    /// Writes k and v (+ v_bias) of every row into its cache slot of `layer`.
    #[allow(clippy::too_many_arguments)]
    fn kv_write(&self, b: &Self::Batch, cache: &mut Self::Cache, layer: usize, k: &Self::Tensor, v: &Self::Tensor, v_bias: Option<&Self::Param>, c: &ModelConfig) -> Result<()>;
    /// Causal GQA attention of q over the paged cache of `layer`.
    fn attention_paged(&self, b: &Self::Batch, cache: &Self::Cache, layer: usize, q: &Self::Tensor, out: &mut Self::Tensor, c: &ModelConfig) -> Result<()>;
    /// Causal GQA attention within each packed sequence, with the row log-sum-exp `[rows, heads]`.
    #[allow(clippy::too_many_arguments)]
    fn attention_packed(&self, b: &Self::Batch, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, out: &mut Self::Tensor, lse: &mut Self::Tensor, c: &ModelConfig) -> Result<()>;
    /// `parts[p][r, c] = src[r, off_p + c]` (`off_p` = Σ of the earlier widths; 2 or 3 parts):
    /// the fused projections' output `[rows, Σ widths]` into one tensor per part (exact copies).
    fn split_cols(&self, src: &Self::Tensor, parts: &mut [&mut Self::Tensor], rows: usize, widths: &[usize]) -> Result<()>;
    /// `out[r] = silu(gate[r]) · up[r]`, gate and up read from the fused gate|up projection's
    /// output `[rows, 2·inter]` (gate the first `inter` columns of a row); `out` `[rows, inter]`.
    fn swiglu(&self, gate_up: &Self::Tensor, out: &mut Self::Tensor, rows: usize, inter: usize) -> Result<()>;
    /// The engine's step (`Transformer::step`) on buffers the backend keeps from step to step,
    /// for the steps it can run that way: the CUDA backend runs decode steps (one token per
    /// sequence, each drawn) on a workspace per batch-size bucket, replayed as a CUDA graph
    /// (src/ops/cuda/decode_graphs.rs). None: the generic step runs it (the default, and the
    /// CPU backend's).
    fn persistent_step(model: &Transformer<Self>, cache: &mut Self::Cache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Option<Vec<Option<Sampled>>>> {
        let _ = (model, cache, chunks, draws);
        Ok(None)
    }

    /// f32 logits `[rows.len(), vocab]` of the given rows of `hidden`, on the host.
    fn logits(&self, hidden: &Self::Tensor, rows: &[usize], lm_head: &Self::Param, c: &ModelConfig) -> Result<Vec<f32>>;
    /// One token drawn from the logits of each given row of `hidden` (`draws[i]` for `rows[i]`):
    /// the engine's seam, which returns tokens and log-probs, never the logits.
    fn sample(&self, hidden: &Self::Tensor, rows: &[usize], lm_head: &Self::Param, c: &ModelConfig, draws: &[Draw]) -> Result<Vec<Sampled>>;

    // --- backward ---------------------------------------------------------------------------
    /// `x += y` over all elements.
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// `dx[m, k] = dy[m, n] · w[n, k]`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_input(&self, dy: &Self::Tensor, w: &Self::Param, dx: &mut Self::Tensor, m: usize, n: usize, k: usize) -> Result<()>;
    /// `dw[n, k] += dy[m, n]ᵀ · x[m, k]`.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_weight(&self, dy: &Self::Tensor, x: &Self::Tensor, dw: &mut Self::Param, m: usize, n: usize, k: usize) -> Result<()>;
    /// `dst[r, off_p + c] = parts[p][r, c]`: the inverse of `split_cols` (the fused projections'
    /// output gradient from its parts').
    fn concat_cols(&self, parts: &[&Self::Tensor], dst: &mut Self::Tensor, rows: usize, widths: &[usize]) -> Result<()>;
    /// `db += Σ_rows dy`.
    fn bias_backward(&self, dy: &Self::Tensor, db: &mut Self::Param, rows: usize, n: usize) -> Result<()>;
    /// Backward of `out = rmsnorm(x) · w`: `dx` overwritten, `dw` accumulated.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(&self, x: &Self::Tensor, w: &Self::Param, dy: &Self::Tensor, dx: &mut Self::Tensor, dw: &mut Self::Param, rows: usize, hidden: usize, eps: f32) -> Result<()>;
    /// Backward of the rotation of `rope_qk`, in place (the bias gradient is `bias_backward`).
    fn rope_backward(&self, b: &Self::Batch, dq: &mut Self::Tensor, dk: &mut Self::Tensor, c: &ModelConfig) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    /// Backward of `swiglu`: `d_gate_up` `[rows, 2·inter]` (overwritten: dgate | dup per row, the
    /// fused projection's output gradient) from `gate_up` and `dy` `[rows, inter]`.
    fn swiglu_backward(&self, gate_up: &Self::Tensor, dy: &Self::Tensor, d_gate_up: &mut Self::Tensor, rows: usize, inter: usize) -> Result<()>;
    /// Backward of `attention_packed` from its saved output and LSE: dq, dk, dv overwritten.
    #[allow(clippy::too_many_arguments)]
    fn attention_packed_backward(
        &self,
        b: &Self::Batch,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        out: &Self::Tensor,
        lse: &Self::Tensor,
        dout: &Self::Tensor,
        dq: &mut Self::Tensor,
        dk: &mut Self::Tensor,
        dv: &mut Self::Tensor,
        c: &ModelConfig,
    ) -> Result<()>;
    /// `d_table[token of row r] += dx[r]`, in row order (deterministic).
    fn embed_backward(&self, b: &Self::Batch, dx: &Self::Tensor, d_table: &mut Self::Param, c: &ModelConfig) -> Result<()>;

    // --- the lm_head log-prob head ------------------------------------------------------------
    /// Log-probs and entropies of `targets[i]` from row `rows[i]` of `hidden`, a vocabulary
    /// chunk at a time (never the whole `[rows, vocab]` logits).
    fn logprobs(&self, hidden: &Self::Tensor, rows: &[usize], targets: &[u32], lm_head: &Self::Param, sh: LogProbShape) -> Result<TokenLogProbs>;
    /// Its backward: `d_hidden` (`hidden`'s shape) overwritten — zero on rows not in `rows` —
    /// and `d_lm_head` accumulated.
    #[allow(clippy::too_many_arguments)]
    fn logprobs_backward(
        &self,
        hidden: &Self::Tensor,
        rows: &[usize],
        targets: &[u32],
        lm_head: &Self::Param,
        fwd: &TokenLogProbs,
        d_logp: &[f32],
        d_entropy: Option<&[f32]>,
        sh: LogProbShape,
        d_hidden: &mut Self::Tensor,
        d_lm_head: &mut Self::Param,
    ) -> Result<()>;

    /// The GRPO per-token objective (`cpu::grpo::grpo_loss`): the loss, its parts and metrics,
    /// and ∂loss/∂logp, ∂loss/∂entropy per token (what `logprobs_backward` takes).
    fn grpo_loss(&self, cfg: &GrpoConfig, x: &GrpoTokens) -> Result<GrpoOutput>;

    // --- the optimizer, over whole flat parameter sets ----------------------------------------
    /// Σ g² over every parameter, in f64.
    fn sum_squares(&self, g: &Self::Params) -> Result<f64>;
    fn scale_params(&self, g: &mut Self::Params, s: f32) -> Result<()>;
    fn zero_params(&self, g: &mut Self::Params) -> Result<()>;
    /// Starts g[range] ← Σ over the ranks of `comm` of g[range] (one bucket: a layer's
    /// gradients); `finish_all_reduce` waits for all started. By default at once, through the host.
    fn all_reduce_params_range(&self, comm: &mut dyn Collective, g: &mut Self::Params, range: std::ops::Range<usize>) -> Result<()> {
        let mut h = self.params_to_host(g)?;
        comm.all_reduce_sum(&mut h.flat_mut()[range])?;
        *g = self.params_from_host(&h, true)?;
        Ok(())
    }
    /// Waits for the buckets `all_reduce_params_range` started.
    fn finish_all_reduce(&self, _comm: &mut dyn Collective) -> Result<()> {
        Ok(())
    }
    /// One AdamW step of every parameter (see `cpu::adamw`).
    fn adamw_update(&self, w: &mut Self::Params, g: &Self::Params, m: &mut Self::Params, v: &mut Self::Params, s: &AdamWStep) -> Result<()>;

    // --- parameter sets between the host and the backend ----------------------------------------
    /// Whether the weights the forward reads are lower precision than the optimizer's, so that
    /// training keeps an f32 master copy beside them (the CUDA backend's bf16 weights); the CPU
    /// reference trains its f32 weights directly.
    fn needs_master(&self) -> bool;
    /// A host parameter set on this backend: as the forward's weights (`master = false`, bf16 on
    /// the CUDA backend) or as f32 (`master = true`: master weights, optimizer moments).
    fn params_from_host(&self, h: &HostParams, master: bool) -> Result<Self::Params>;
    /// The values of a parameter set on the host, as f32.
    fn params_to_host(&self, p: &Self::Params) -> Result<HostParams>;
    /// `weights` ← `master` (rounded to the weights' precision), on the backend: the optimizer's
    /// update reaching the copy the forward and the rollouts read, with no host round trip.
    fn sync_weights(&self, master: &Self::Params, weights: &mut Self::Params) -> Result<()>;
    /// Device memory held through the device layer and its peak since `reset_peak_memory`
    /// (None on the CPU reference, whose memory is the process's own).
    fn memory(&self) -> Option<crate::device::MemStats> {
        None
    }

    fn reset_peak_memory(&self) {}
}
