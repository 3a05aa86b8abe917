//! The Qwen2/Llama decoder, written once over the `Ops` interface: CPU inference, CUDA inference
//! (GPU or interpret mode) and training all run this one layer chain.
//!
//! Per layer, for the T rows of a batch (the residual stream `res`; `proj` carries each branch's
//! output into the next fused add + norm):
//!   n1 = rmsnorm(res += proj)                  add_rmsnorm (layer 0: res = embeddings, no add)
//!   q, k, v = n1·Wqᵀ, n1·Wkᵀ, n1·Wvᵀ            linear ×3
//!   q, k = rope(q + bq), rope(k + bk)           rope_qk
//!   paged:  cache ← k, v + bv;  a = attn(q, cache)            kv_write, attention_paged
//!   packed: v += bv;            a, lse = attn(q, k, v)        add_bias, attention_packed
//!   proj = a·Woᵀ;  n2 = rmsnorm(res += proj)    linear, add_rmsnorm
//!   proj = (silu(n2·Wgᵀ) ⊙ n2·Wuᵀ)·Wdᵀ           linear ×2, swiglu, linear
//! and finally hidden = rmsnorm(res += proj) with the final norm.
//!
//! Two layouts of the rows (`Ops::Batch`):
//! - paged (`forward`, `step`): chunks of sequences that read and extend the paged KV cache —
//!   prefill, chunked prefill and decode are the same call;
//! - packed (`forward_packed`, `backward`): whole training sequences one after the other, each
//!   causal on its own, no cache. `Save` says what the backward gets: every intermediate, or
//!   only each layer's input, the layer being recomputed just before its backward (per-layer
//!   checkpointing; the recomputation is the same deterministic code on the same input, so both
//!   give bit-identical gradients).
//!
//! The backward runs the chain in reverse with each op's backward (see the `Ops` table) from
//! ∂L/∂hidden to ∂L/∂θ for every parameter but the lm_head, whose gradient belongs to the
//! log-prob head that owns the vocabulary product (`Ops::logprobs_backward`).

use super::config::ModelConfig;
use super::safetensors_files::Checkpoint;
use crate::ops::cpu::CpuOps;
use crate::ops::cuda::{CudaOps, DeviceParams};
use crate::ops::{Draw, Ops, Sampled};
use crate::params::{table_for_checkpoint, HostParams, Kind, ParamTable};
use anyhow::{bail, ensure, Result};
use std::path::Path;
use std::sync::Arc;

/// A decoder on one backend: its config, its numerics and its weights.
pub struct Transformer<O: Ops> {
    pub config: ModelConfig,
    pub ops: O,
    pub weights: O::Params,
    table: Arc<ParamTable>,
}

/// The f32 CPU reference model (the trainer's master copy).
pub type Model = Transformer<CpuOps>;
/// The bf16 model of the CUDA backend (a GPU, or interpret mode).
pub type CudaModel = Transformer<CudaOps>;

/// New tokens of one sequence: they sit at positions `start_pos ..` and their K/V go to the
/// blocks of `table` (which must already cover `start_pos + tokens.len()` positions).
#[derive(Clone, Copy)]
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub table: &'a [u32],
}

/// What the packed forward keeps for the backward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Save {
    /// Every intermediate of every layer (fastest backward, most memory).
    All,
    /// Only each layer's input; the layer is recomputed in the backward.
    Checkpoint,
    /// Nothing: a forward for log-probs only (no backward possible).
    Nothing,
}

/// One layer's intermediates (the backward reads all but `proj`'s predecessor).
struct Acts<T> {
    n1: T,
    q: T, // after RoPE
    k: T, // after RoPE
    v: T, // with its bias
    attn: T,
    lse: Option<T>, // packed only
    x_mid: Option<T>, // the residual after the attention branch (training only)
    n2: T,
    gate: T, // pre-activation
    up: T,
    act: T, // silu(gate) ⊙ up
}

impl<T> Acts<T> {
    fn new<O: Ops<Tensor = T>>(o: &O, c: &ModelConfig, t: usize, packed: bool) -> Result<Self> {
        let (h, qd, kvd, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        Ok(Acts {
            n1: o.zeros(t * h)?,
            q: o.zeros(t * qd)?,
            k: o.zeros(t * kvd)?,
            v: o.zeros(t * kvd)?,
            attn: o.zeros(t * qd)?,
            lse: if packed { Some(o.zeros(t * c.num_heads)?) } else { None },
            x_mid: None,
            n2: o.zeros(t * h)?,
            gate: o.zeros(t * inter)?,
            up: o.zeros(t * inter)?,
            act: o.zeros(t * inter)?,
        })
    }
}

/// The result of `forward_packed`: final-normed hidden states and what the backward needs.
pub struct PackedForward<O: Ops> {
    /// `[T, hidden]` final-normed hidden states, rows in sequence order.
    pub hidden: O::Tensor,
    /// Rows (tokens) of the batch.
    pub rows: usize,
    batch: O::Batch,
    layer_inputs: Vec<O::Tensor>,
    acts: Vec<Acts<O::Tensor>>,
    x_final: Option<O::Tensor>,
}

impl<O: Ops> Transformer<O> {
    pub fn new(config: ModelConfig, ops: O, weights: O::Params, table: Arc<ParamTable>) -> Result<Self> {
        ensure!(table.num_layers() == config.num_layers, "a parameter table of {} layers for a {}-layer config", table.num_layers(), config.num_layers);
        Ok(Transformer { config, ops, weights, table })
    }

    pub fn table(&self) -> &Arc<ParamTable> {
        &self.table
    }

    fn w(&self, kind: Kind, l: usize) -> &O::Param {
        self.ops.param(&self.weights, self.table.layer(kind, l))
    }

    fn w_opt(&self, kind: Kind, l: usize) -> Option<&O::Param> {
        self.table.get(kind, Some(l)).map(|id| self.ops.param(&self.weights, id))
    }

    pub fn lm_head(&self) -> &O::Param {
        self.ops.param(&self.weights, self.table.lm_head())
    }

    /// A paged KV cache for this model (`num_blocks` blocks of `block_size` tokens).
    pub fn new_cache(&self, num_blocks: usize, block_size: usize) -> Result<O::Cache> {
        self.ops.new_cache(&self.config, num_blocks, block_size)
    }

    /// One layer forward over the batch's `t` rows: `res` and `proj` as in the module docs
    /// (`first`: no branch output to add yet). `cache`: the paged layout; None: packed.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: usize,
        b: &O::Batch,
        t: usize,
        res: &mut O::Tensor,
        proj: &mut O::Tensor,
        first: bool,
        cache: Option<&mut O::Cache>,
        a: &mut Acts<O::Tensor>,
        keep_x_mid: bool,
    ) -> Result<()> {
        let (o, c) = (&self.ops, &self.config);
        let (h, qd, kvd, inter, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps);
        o.add_rmsnorm(res, (!first).then_some(&*proj), self.w(Kind::InputNorm, l), &mut a.n1, t, h, eps)?;
        o.linear(&a.n1, self.w(Kind::QProj, l), &mut a.q, t, qd, h)?;
        o.linear(&a.n1, self.w(Kind::KProj, l), &mut a.k, t, kvd, h)?;
        o.linear(&a.n1, self.w(Kind::VProj, l), &mut a.v, t, kvd, h)?;
        o.rope_qk(b, &mut a.q, &mut a.k, self.w_opt(Kind::QBias, l), self.w_opt(Kind::KBias, l), c)?;
        let v_bias = self.w_opt(Kind::VBias, l);
        match cache {
            Some(cache) => {
                o.kv_write(b, cache, l, &a.k, &a.v, v_bias, c)?;
                o.attention_paged(b, cache, l, &a.q, &mut a.attn, c)?;
            }
            None => {
                if let Some(vb) = v_bias {
                    o.add_bias(&mut a.v, vb, t, kvd)?;
                }
                let Some(lse) = a.lse.as_mut() else { bail!("packed attention without an LSE buffer") };
                o.attention_packed(b, &a.q, &a.k, &a.v, &mut a.attn, lse, c)?;
            }
        }
        o.linear(&a.attn, self.w(Kind::OProj, l), proj, t, h, qd)?;
        o.add_rmsnorm(res, Some(proj), self.w(Kind::PostNorm, l), &mut a.n2, t, h, eps)?;
        if keep_x_mid {
            a.x_mid = Some(o.copy(res)?);
        }
        o.linear(&a.n2, self.w(Kind::GateProj, l), &mut a.gate, t, inter, h)?;
        o.linear(&a.n2, self.w(Kind::UpProj, l), &mut a.up, t, inter, h)?;
        o.swiglu(&a.gate, &a.up, &mut a.act, t * inter)?;
        o.linear(&a.act, self.w(Kind::DownProj, l), proj, t, h, inter)
    }

    /// Runs the chunks through every layer, appending their K/V to the cache, and returns the
    /// final-normed hidden states `[total tokens, hidden]` in chunk order.
    pub fn forward(&self, cache: &mut O::Cache, chunks: &[SeqChunk]) -> Result<O::Tensor> {
        let (o, c) = (&self.ops, &self.config);
        let t: usize = chunks.iter().map(|ch| ch.tokens.len()).sum();
        ensure!(t > 0, "forward of an empty batch");
        let b = o.paged_batch(c, cache, chunks)?;
        let h = c.hidden_size;
        let mut res = o.zeros(t * h)?;
        o.embed(&b, o.param(&self.weights, self.table.embed()), &mut res, c)?;
        let mut proj = o.zeros(t * h)?;
        let mut a = Acts::new(o, c, t, false)?;
        for l in 0..c.num_layers {
            self.layer_forward(l, &b, t, &mut res, &mut proj, l == 0, Some(&mut *cache), &mut a, false)?;
        }
        let mut hidden = o.zeros(t * h)?;
        let last = (c.num_layers > 0).then_some(&proj);
        o.add_rmsnorm(&mut res, last, o.param(&self.weights, self.table.final_norm()), &mut hidden, t, h, c.rms_norm_eps)?;
        Ok(hidden)
    }

    /// f32 logits `[rows.len(), vocab]` of the given rows of final hidden states (debugging and
    /// parity checks; generation goes through `step`).
    pub fn logits(&self, hidden: &O::Tensor, rows: &[usize]) -> Result<Vec<f32>> {
        self.ops.logits(hidden, rows, self.lm_head(), &self.config)
    }

    /// The engine's step: runs the chunks (appending their K/V to the cache) and, for each chunk
    /// with a draw, draws the next token of its sequence from the logits of its last position
    /// (`draws[i]` for chunk i; None for a prompt chunk that is not its last). Only the tokens
    /// and their log-probs come back.
    pub fn step(&self, cache: &mut O::Cache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Vec<Option<Sampled>>> {
        ensure!(chunks.len() == draws.len(), "{} chunks with {} draws", chunks.len(), draws.len());
        let hidden = self.forward(cache, chunks)?;
        let (mut rows, mut wanted) = (Vec::new(), Vec::new());
        let mut end = 0;
        for (ch, d) in chunks.iter().zip(draws) {
            end += ch.tokens.len();
            if let Some(d) = d {
                rows.push(end - 1);
                wanted.push(*d);
            }
        }
        let mut drawn = if rows.is_empty() { Vec::new() } else { self.ops.sample(&hidden, &rows, self.lm_head(), &self.config, &wanted)? }.into_iter();
        Ok(draws.iter().map(|d| d.and_then(|_| drawn.next())).collect())
    }

    /// The logits of each chunk's last position, `[chunks, vocab]` (tests and tools).
    pub fn last_token_logits(&self, cache: &mut O::Cache, chunks: &[SeqChunk]) -> Result<Vec<f32>> {
        let hidden = self.forward(cache, chunks)?;
        let rows: Vec<usize> = chunks.iter().scan(0, |row, ch| {
            *row += ch.tokens.len();
            Some(*row - 1)
        }).collect();
        self.logits(&hidden, &rows)
    }

    /// Logits `[positions, vocab]` of one sequence prefilled in one chunk: every position, or
    /// the last one only (the `logits` command and parity checks).
    pub fn sequence_logits(&self, tokens: &[u32], all_positions: bool) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        ensure!(!tokens.is_empty(), "no tokens");
        ensure!(
            tokens.len() <= c.max_position_embeddings,
            "{} tokens exceed the model's context of {}",
            tokens.len(),
            c.max_position_embeddings
        );
        let block_size = 16;
        let blocks = tokens.len().div_ceil(block_size);
        let table: Vec<u32> = (0..blocks as u32).collect();
        let mut cache = self.new_cache(blocks, block_size)?;
        let hidden = self.forward(&mut cache, &[SeqChunk { tokens, start_pos: 0, table: &table }])?;
        let rows: Vec<usize> = if all_positions { (0..tokens.len()).collect() } else { vec![tokens.len() - 1] };
        Ok(self.logits(&hidden, &rows)?.chunks_exact(c.vocab_size).map(|r| r.to_vec()).collect())
    }

    /// Runs the decoder over whole sequences (each at positions 0..len), keeping what `save`
    /// asks for the backward.
    pub fn forward_packed(&self, seqs: &[&[u32]], save: Save) -> Result<PackedForward<O>> {
        let (o, c) = (&self.ops, &self.config);
        let b = o.packed_batch(c, seqs)?;
        let t: usize = seqs.iter().map(|s| s.len()).sum();
        let h = c.hidden_size;
        let mut res = o.zeros(t * h)?;
        o.embed(&b, o.param(&self.weights, self.table.embed()), &mut res, c)?;
        let mut proj = o.zeros(t * h)?;
        let (mut layer_inputs, mut acts) = (Vec::new(), Vec::new());
        let mut scratch = Acts::new(o, c, t, true)?;
        for l in 0..c.num_layers {
            // The layer's input is `res` after the add of the previous layer's branch; the
            // recomputation starts from a copy of it with nothing left to add.
            if l > 0 {
                o.add(&mut res, &proj)?;
            }
            if save != Save::Nothing {
                layer_inputs.push(o.copy(&res)?);
            }
            if save == Save::All {
                let mut a = Acts::new(o, c, t, true)?;
                self.layer_forward(l, &b, t, &mut res, &mut proj, true, None, &mut a, true)?;
                acts.push(a);
            } else {
                self.layer_forward(l, &b, t, &mut res, &mut proj, true, None, &mut scratch, false)?;
            }
        }
        let mut hidden = o.zeros(t * h)?;
        let last = (c.num_layers > 0).then_some(&proj);
        o.add_rmsnorm(&mut res, last, o.param(&self.weights, self.table.final_norm()), &mut hidden, t, h, c.rms_norm_eps)?;
        let x_final = (save != Save::Nothing).then_some(res);
        Ok(PackedForward { hidden, rows: t, batch: b, layer_inputs, acts, x_final })
    }

    /// Accumulates ∂L/∂θ into `grads` given ∂L/∂hidden (`[T, hidden]`, the rows of
    /// `fwd.hidden`): the final norm, every layer and the embedding lookup.
    pub fn backward(&self, fwd: &PackedForward<O>, d_hidden: &O::Tensor, grads: &mut O::Params) -> Result<()> {
        self.backward_with(fwd, d_hidden, grads, &mut |_, _| Ok(()))
    }

    /// `backward`, calling `layer_done(l, grads)` as soon as layer `l`'s parameter gradients are
    /// final (last layer first; the embedding's are final only on return): the data-parallel
    /// step starts that layer's all-reduce there, beside the backward of the earlier layers.
    pub fn backward_with(
        &self,
        fwd: &PackedForward<O>,
        d_hidden: &O::Tensor,
        grads: &mut O::Params,
        layer_done: &mut dyn FnMut(usize, &mut O::Params) -> Result<()>,
    ) -> Result<()> {
        let (o, c) = (&self.ops, &self.config);
        let Some(x_final) = &fwd.x_final else {
            bail!("backward needs a forward run with Save::All or Save::Checkpoint");
        };
        let (t, h) = (fwd.rows, c.hidden_size);
        let mut dx = o.zeros(t * h)?;
        let final_norm = self.table.final_norm();
        o.rmsnorm_backward(x_final, o.param(&self.weights, final_norm), d_hidden, &mut dx, o.param_mut(grads, final_norm), t, h, c.rms_norm_eps)?;
        for l in (0..c.num_layers).rev() {
            let x_in = &fwd.layer_inputs[l];
            let recomputed;
            let a = match fwd.acts.get(l) {
                Some(a) => a,
                None => {
                    let mut a = Acts::new(o, c, t, true)?;
                    let (mut res, mut proj) = (o.copy(x_in)?, o.zeros(t * h)?);
                    self.layer_forward(l, &fwd.batch, t, &mut res, &mut proj, true, None, &mut a, true)?;
                    recomputed = a;
                    &recomputed
                }
            };
            self.layer_backward(l, &fwd.batch, t, x_in, a, &mut dx, grads)?;
            layer_done(l, grads)?;
        }
        o.embed_backward(&fwd.batch, &dx, o.param_mut(grads, self.table.embed()), c)
    }

    /// Backward of one layer: `dx` holds ∂L/∂(layer output) on entry and ∂L/∂(layer input) on
    /// return; the parameter gradients are accumulated into `g`.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(&self, l: usize, b: &O::Batch, t: usize, x_in: &O::Tensor, a: &Acts<O::Tensor>, dx: &mut O::Tensor, g: &mut O::Params) -> Result<()> {
        let (o, c) = (&self.ops, &self.config);
        let (h, qd, kvd, inter, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps);
        let id = |k: Kind| self.table.layer(k, l);
        let Some(x_mid) = &a.x_mid else { bail!("layer {l}: the backward needs the saved mid-layer residual") };

        // MLP: out = x_mid + act·W_dᵀ, act = silu(gate) ⊙ up, gate/up = n2·W_{g,u}ᵀ.
        let mut d_act = o.zeros(t * inter)?;
        o.linear_backward_input(dx, self.w(Kind::DownProj, l), &mut d_act, t, h, inter)?;
        o.linear_backward_weight(dx, &a.act, o.param_mut(g, id(Kind::DownProj)), t, h, inter)?;
        let (mut d_gate, mut d_up) = (o.zeros(t * inter)?, o.zeros(t * inter)?);
        o.swiglu_backward(&a.gate, &a.up, &d_act, &mut d_gate, &mut d_up, t * inter)?;
        drop(d_act);
        o.linear_backward_weight(&d_gate, &a.n2, o.param_mut(g, id(Kind::GateProj)), t, inter, h)?;
        o.linear_backward_weight(&d_up, &a.n2, o.param_mut(g, id(Kind::UpProj)), t, inter, h)?;
        let (mut d_n2, mut tmp) = (o.zeros(t * h)?, o.zeros(t * h)?);
        o.linear_backward_input(&d_gate, self.w(Kind::GateProj, l), &mut d_n2, t, inter, h)?;
        o.linear_backward_input(&d_up, self.w(Kind::UpProj, l), &mut tmp, t, inter, h)?;
        o.add(&mut d_n2, &tmp)?;
        o.rmsnorm_backward(x_mid, self.w(Kind::PostNorm, l), &d_n2, &mut tmp, o.param_mut(g, id(Kind::PostNorm)), t, h, eps)?;
        o.add(dx, &tmp)?; // dx = ∂L/∂x_mid

        // Attention: x_mid = x_in + attn·W_oᵀ.
        let mut d_attn = o.zeros(t * qd)?;
        o.linear_backward_input(dx, self.w(Kind::OProj, l), &mut d_attn, t, h, qd)?;
        o.linear_backward_weight(dx, &a.attn, o.param_mut(g, id(Kind::OProj)), t, h, qd)?;
        let (mut dq, mut dk, mut dv) = (o.zeros(t * qd)?, o.zeros(t * kvd)?, o.zeros(t * kvd)?);
        let Some(lse) = &a.lse else { bail!("layer {l}: the backward needs the attention's LSE") };
        o.attention_packed_backward(b, &a.q, &a.k, &a.v, &a.attn, lse, &d_attn, &mut dq, &mut dk, &mut dv, c)?;
        drop(d_attn);
        o.rope_backward(b, &mut dq, &mut dk, c)?;
        for (d, kind, n) in [(&dq, Kind::QBias, qd), (&dk, Kind::KBias, kvd), (&dv, Kind::VBias, kvd)] {
            if let Some(bias) = self.table.get(kind, Some(l)) {
                o.bias_backward(d, o.param_mut(g, bias), t, n)?;
            }
        }
        o.linear_backward_weight(&dq, &a.n1, o.param_mut(g, id(Kind::QProj)), t, qd, h)?;
        o.linear_backward_weight(&dk, &a.n1, o.param_mut(g, id(Kind::KProj)), t, kvd, h)?;
        o.linear_backward_weight(&dv, &a.n1, o.param_mut(g, id(Kind::VProj)), t, kvd, h)?;
        let mut d_n1 = o.zeros(t * h)?;
        o.linear_backward_input(&dq, self.w(Kind::QProj, l), &mut d_n1, t, qd, h)?;
        o.linear_backward_input(&dk, self.w(Kind::KProj, l), &mut tmp, t, kvd, h)?;
        o.add(&mut d_n1, &tmp)?;
        o.linear_backward_input(&dv, self.w(Kind::VProj, l), &mut tmp, t, kvd, h)?;
        o.add(&mut d_n1, &tmp)?;
        o.rmsnorm_backward(x_in, self.w(Kind::InputNorm, l), &d_n1, &mut tmp, o.param_mut(g, id(Kind::InputNorm)), t, h, eps)?;
        o.add(dx, &tmp) // dx = ∂L/∂x_in
    }
}

impl Model {
    /// Loads `config.json` and the safetensors weights of a Hugging Face model directory.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            bail!("model directory {} does not exist", dir.display());
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let ckpt = Checkpoint::open(dir)?;
        let table = table_for_checkpoint(&config, &ckpt);
        let weights = HostParams::load(&ckpt, &table)?;
        Transformer::new(config, CpuOps, weights, table)
    }

    /// A CPU model of `config` holding `weights` (laid out by a table of this config).
    pub fn from_weights(config: ModelConfig, weights: HostParams) -> Result<Self> {
        let table = weights.table().clone();
        Transformer::new(config, CpuOps, weights, table)
    }
}

impl Clone for Model {
    fn clone(&self) -> Self {
        Transformer { config: self.config.clone(), ops: CpuOps, weights: self.weights.clone(), table: self.table.clone() }
    }
}

impl CudaModel {
    /// Copies the weights of a loaded model to `ops`' device as bf16 (round to nearest even).
    pub fn from_model(ops: CudaOps, model: &Model) -> Result<Self> {
        let weights = DeviceParams::upload(&ops.dev, &model.weights)?;
        Transformer::new(model.config.clone(), ops, weights, model.table.clone())
    }

    /// Replaces the weights with those of `model` (same architecture), in place on the same
    /// device: the trainer's rollout model after each update (never two copies on the device).
    pub fn set_weights(&mut self, model: &Model) -> Result<()> {
        self.weights.write(&self.ops.dev, &model.weights)
    }
}
