//! The tensor table: every parameter of a Qwen2/Llama model, defined once — its Hugging Face
//! name, shape, role and layer — and one flat allocation that holds them all.
//!
//! Everything that needs "the list of weights" derives it from `ParamTable`: loading a
//! checkpoint, writing one, the gradients and AdamW moments (same table, same offsets), the
//! device copies (the same offsets into one device buffer), the default run's random
//! initialisation, and the optimizer, which walks the flat buffer in one pass (and a future
//! all-reduce of the gradients is one call on one buffer).
//!
//! Order of the tensors (and of the flat buffer): the embedding, then per layer
//! `LAYER_TENSORS` in the order below, then the final norm, then the lm_head when it is not tied
//! to the embedding. This is the order Hugging Face writes and the order the optimizer state
//! file lists its moments in.

use crate::model::config::ModelConfig;
use anyhow::{bail, Result};
use std::sync::Arc;

/// What a tensor is, independent of its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Embed,
    InputNorm,
    QProj,
    KProj,
    VProj,
    QBias,
    KBias,
    VBias,
    OProj,
    PostNorm,
    GateProj,
    UpProj,
    DownProj,
    FinalNorm,
    LmHead,
}

/// How a tensor starts in a model trained from scratch (GPT-2 / Llama convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A matrix drawn from N(0, σ²): embeddings, lm_head, projections into a residual branch.
    Matrix,
    /// A matrix that writes into the residual stream (o_proj, down_proj): N(0, σ²/(2·layers)),
    /// so the residual's variance does not grow with depth.
    ResidualOut,
    /// An RMSNorm gain: ones.
    Norm,
    /// A bias: zeros.
    Bias,
}

/// One row of the table's definition: a kind, its Hugging Face name (the part after
/// `model.layers.N.` for per-layer tensors), its role, and its shape from the config.
struct Spec {
    kind: Kind,
    name: &'static str,
    role: Role,
    shape: fn(&ModelConfig) -> Vec<usize>,
}

/// The tensors of one decoder layer, in checkpoint order. Biases exist only with `qkv_bias`.
const LAYER_TENSORS: [Spec; 12] = [
    Spec { kind: Kind::InputNorm, name: "input_layernorm.weight", role: Role::Norm, shape: |c| vec![c.hidden_size] },
    Spec { kind: Kind::QProj, name: "self_attn.q_proj.weight", role: Role::Matrix, shape: |c| vec![c.q_dim(), c.hidden_size] },
    Spec { kind: Kind::KProj, name: "self_attn.k_proj.weight", role: Role::Matrix, shape: |c| vec![c.kv_dim(), c.hidden_size] },
    Spec { kind: Kind::VProj, name: "self_attn.v_proj.weight", role: Role::Matrix, shape: |c| vec![c.kv_dim(), c.hidden_size] },
    Spec { kind: Kind::QBias, name: "self_attn.q_proj.bias", role: Role::Bias, shape: |c| vec![c.q_dim()] },
    Spec { kind: Kind::KBias, name: "self_attn.k_proj.bias", role: Role::Bias, shape: |c| vec![c.kv_dim()] },
    Spec { kind: Kind::VBias, name: "self_attn.v_proj.bias", role: Role::Bias, shape: |c| vec![c.kv_dim()] },
    Spec { kind: Kind::OProj, name: "self_attn.o_proj.weight", role: Role::ResidualOut, shape: |c| vec![c.hidden_size, c.q_dim()] },
    Spec { kind: Kind::PostNorm, name: "post_attention_layernorm.weight", role: Role::Norm, shape: |c| vec![c.hidden_size] },
    Spec { kind: Kind::GateProj, name: "mlp.gate_proj.weight", role: Role::Matrix, shape: |c| vec![c.intermediate_size, c.hidden_size] },
    Spec { kind: Kind::UpProj, name: "mlp.up_proj.weight", role: Role::Matrix, shape: |c| vec![c.intermediate_size, c.hidden_size] },
    Spec { kind: Kind::DownProj, name: "mlp.down_proj.weight", role: Role::ResidualOut, shape: |c| vec![c.hidden_size, c.intermediate_size] },
];
const EMBED: Spec = Spec { kind: Kind::Embed, name: "model.embed_tokens.weight", role: Role::Matrix, shape: |c| vec![c.vocab_size, c.hidden_size] };
const FINAL_NORM: Spec = Spec { kind: Kind::FinalNorm, name: "model.norm.weight", role: Role::Norm, shape: |c| vec![c.hidden_size] };
const LM_HEAD: Spec = Spec { kind: Kind::LmHead, name: "lm_head.weight", role: Role::Matrix, shape: |c| vec![c.vocab_size, c.hidden_size] };

fn is_bias(k: Kind) -> bool {
    matches!(k, Kind::QBias | Kind::KBias | Kind::VBias)
}

/// Index of a tensor in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// One tensor of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The full Hugging Face name (`model.layers.3.mlp.up_proj.weight`).
    pub name: String,
    pub kind: Kind,
    pub layer: Option<usize>,
    pub role: Role,
    pub shape: Vec<usize>,
    /// First element in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Entry {
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Every parameter tensor of one model, with its place in the flat buffer.
#[derive(Debug, PartialEq)]
pub struct ParamTable {
    entries: Vec<Entry>,
    total: usize,
    /// Per layer, per position in `LAYER_TENSORS`: the entry (None for absent biases).
    layer_ids: Vec<[Option<ParamId>; 12]>,
    embed: ParamId,
    final_norm: ParamId,
    lm_head: Option<ParamId>,
}

impl ParamTable {
    /// The tensors of `c`: an lm_head of its own unless the embeddings are tied.
    pub fn new(c: &ModelConfig) -> Arc<Self> {
        Self::with_lm_head(c, !c.tie_word_embeddings)
    }

    /// As `new`, stating whether the lm_head is a tensor of its own (a checkpoint of a tied
    /// model may still carry one; it is then used).
    pub fn with_lm_head(c: &ModelConfig, own_lm_head: bool) -> Arc<Self> {
        let mut t = ParamTable {
            entries: Vec::new(),
            total: 0,
            layer_ids: Vec::with_capacity(c.num_layers),
            embed: ParamId(0),
            final_norm: ParamId(0),
            lm_head: None,
        };
        t.embed = t.push(&EMBED, None, EMBED.name.to_string(), c);
        for l in 0..c.num_layers {
            let mut ids = [None; 12];
            for (i, s) in LAYER_TENSORS.iter().enumerate() {
                if is_bias(s.kind) && !c.qkv_bias {
                    continue;
                }
                ids[i] = Some(t.push(s, Some(l), format!("model.layers.{l}.{}", s.name), c));
            }
            t.layer_ids.push(ids);
        }
        t.final_norm = t.push(&FINAL_NORM, None, FINAL_NORM.name.to_string(), c);
        if own_lm_head {
            t.lm_head = Some(t.push(&LM_HEAD, None, LM_HEAD.name.to_string(), c));
        }
        Arc::new(t)
    }

    fn push(&mut self, s: &Spec, layer: Option<usize>, name: String, c: &ModelConfig) -> ParamId {
        let shape = (s.shape)(c);
        let len = shape.iter().product();
        self.entries.push(Entry { name, kind: s.kind, layer, role: s.role, shape, offset: self.total, len });
        self.total += len;
        ParamId(self.entries.len() - 1)
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn entry(&self, id: ParamId) -> &Entry {
        &self.entries[id.0]
    }

    /// The elements of the consecutive tensors `first..=last` in the flat buffer: one matrix when
    /// they share their column count (the q/k/v projections are `[q + 2·kv, hidden]`, gate/up
    /// `[2·inter, hidden]`), which the fused projections read and write as a view (issue 15).
    pub fn span(&self, first: ParamId, last: ParamId) -> anyhow::Result<std::ops::Range<usize>> {
        anyhow::ensure!(first.0 <= last.0 && last.0 < self.entries.len(), "a span of parameters {}..={} of {}", first.0, last.0, self.entries.len());
        for w in self.entries[first.0..=last.0].windows(2) {
            // `push` lays the tensors out one after the other; this states what the view relies on.
            anyhow::ensure!(w[0].offset + w[0].len == w[1].offset, "`{}` and `{}` are not consecutive", w[0].name, w[1].name);
        }
        Ok(self.entries[first.0].offset..self.entries[last.0].offset + self.entries[last.0].len)
    }

    /// Elements of the flat buffer.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The flat-buffer range of layer `l`'s tensors (they are consecutive): one gradient bucket.
    pub fn layer_range(&self, l: usize) -> std::ops::Range<usize> {
        let ids = self.layer_ids[l].iter().flatten();
        let start = ids.clone().map(|id| self.entries[id.0].offset).min().unwrap_or(0);
        let end = ids.map(|id| self.entries[id.0].range().end).max().unwrap_or(start);
        start..end
    }

    /// The ranges outside every layer (the embedding before them; the final norm and the
    /// lm_head after): the buckets whose gradients are final only when the backward returns.
    pub fn global_ranges(&self) -> Vec<std::ops::Range<usize>> {
        let first = if self.layer_ids.is_empty() { self.total } else { self.layer_range(0).start };
        let last = if self.layer_ids.is_empty() { self.total } else { self.layer_range(self.layer_ids.len() - 1).end };
        [0..first, last..self.total].into_iter().filter(|r| !r.is_empty()).collect()
    }

    pub fn num_layers(&self) -> usize {
        self.layer_ids.len()
    }

    /// The tensor of `kind` in `layer` (None for a global tensor), if the model has one.
    pub fn get(&self, kind: Kind, layer: Option<usize>) -> Option<ParamId> {
        match (kind, layer) {
            (Kind::Embed, None) => Some(self.embed),
            (Kind::FinalNorm, None) => Some(self.final_norm),
            (Kind::LmHead, None) => self.lm_head,
            (k, Some(l)) => {
                let i = LAYER_TENSORS.iter().position(|s| s.kind == k)?;
                self.layer_ids.get(l)?[i]
            }
            _ => None,
        }
    }

    /// The tensor of `kind` in layer `l`; the model must have it (biases: see `get`).
    pub fn layer(&self, kind: Kind, l: usize) -> ParamId {
        self.get(kind, Some(l)).unwrap_or_else(|| panic!("layer {l} has no {kind:?} tensor"))
    }

    pub fn embed(&self) -> ParamId {
        self.embed
    }

    pub fn final_norm(&self) -> ParamId {
        self.final_norm
    }

    /// The lm_head: its own tensor, or the embedding when they are tied.
    pub fn lm_head(&self) -> ParamId {
        self.lm_head.unwrap_or(self.embed)
    }

    pub fn has_own_lm_head(&self) -> bool {
        self.lm_head.is_some()
    }

    /// The tensor with this Hugging Face name.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.entries.iter().position(|e| e.name == name).map(ParamId)
    }
}

/// A full set of parameters in host memory (f32): weights, gradients or AdamW moments. One flat
/// `Vec<f32>` in table order; each tensor is a slice of it.
#[derive(Clone, PartialEq)]
pub struct HostParams {
    table: Arc<ParamTable>,
    data: Vec<f32>,
}

impl std::fmt::Debug for HostParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostParams({} tensors, {} values)", self.table.entries.len(), self.data.len())
    }
}

impl HostParams {
    pub fn zeros(table: &Arc<ParamTable>) -> Self {
        HostParams { table: table.clone(), data: vec![0.0; table.total] }
    }

    /// Every tensor filled by `f(entry, values)`, in table order.
    pub fn from_fn(table: &Arc<ParamTable>, mut f: impl FnMut(&Entry, &mut [f32])) -> Self {
        let mut p = Self::zeros(table);
        for e in &table.entries {
            f(e, &mut p.data[e.range()]);
        }
        p
    }

    /// Wraps a flat buffer laid out by `table`.
    pub fn from_flat(table: &Arc<ParamTable>, data: Vec<f32>) -> Result<Self> {
        if data.len() != table.total {
            bail!("a flat parameter buffer of {} values for a table of {}", data.len(), table.total);
        }
        Ok(HostParams { table: table.clone(), data })
    }

    /// Reads every tensor of `table` from a safetensors checkpoint (shape-checked; F32, BF16
    /// and F16 converted to f32). Errors name the file and the tensor.
    pub fn load(ckpt: &crate::model::safetensors_files::Checkpoint, table: &Arc<ParamTable>) -> Result<Self> {
        let mut p = Self::zeros(table);
        for e in &table.entries {
            let v = ckpt.tensor_f32(&e.name, &e.shape)?;
            p.data[e.range()].copy_from_slice(&v);
        }
        Ok(p)
    }

    pub fn table(&self) -> &Arc<ParamTable> {
        &self.table
    }

    pub fn get(&self, id: ParamId) -> &[f32] {
        &self.data[self.table.entries[id.0].range()]
    }

    pub fn get_mut(&mut self, id: ParamId) -> &mut [f32] {
        let r = self.table.entries[id.0].range();
        &mut self.data[r]
    }

    /// The tensor of `kind` in layer `l` (see `ParamTable::layer`).
    pub fn layer(&self, kind: Kind, l: usize) -> &[f32] {
        self.get(self.table.layer(kind, l))
    }

    pub fn lm_head(&self) -> &[f32] {
        self.get(self.table.lm_head())
    }

    /// The flat buffer.
    pub fn flat(&self) -> &[f32] {
        &self.data
    }

    pub fn flat_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_flat(self) -> Vec<f32> {
        self.data
    }

    /// Every tensor with its entry, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&Entry, &[f32])> {
        self.table.entries.iter().map(|e| (e, &self.data[e.range()]))
    }

    /// Every tensor, mutable, with its entry (disjoint slices of the flat buffer).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Entry, &mut [f32])> {
        let mut rest: &mut [f32] = &mut self.data;
        self.table.entries.iter().map(move |e| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(e.len);
            rest = tail;
            (e, head)
        })
    }

    /// Same table (same tensors, shapes and order), for combining two parameter sets.
    pub fn check_same_table(&self, other: &HostParams, what: &str) -> Result<()> {
        if !Arc::ptr_eq(&self.table, &other.table) && self.table != other.table {
            bail!("{what}: the two parameter sets describe different models");
        }
        Ok(())
    }
}

/// Parses per-tensor values back into a flat buffer: `(name, values)` pairs must name every
/// tensor of `table` exactly once, with the right length (an optimizer state file, say).
pub fn flat_from_named(table: &Arc<ParamTable>, named: Vec<(String, Vec<f32>)>, what: &str) -> Result<HostParams> {
    if named.len() != table.entries.len() {
        bail!("{what} has {} tensors, the model {}", named.len(), table.entries.len());
    }
    let mut p = HostParams::zeros(table);
    for (e, (name, values)) in table.entries.iter().zip(named) {
        if name != e.name || values.len() != e.len {
            bail!("{what}: tensor `{name}` ({} values) does not match parameter `{}` ({} values)", values.len(), e.name, e.len);
        }
        p.data[e.range()].copy_from_slice(&values);
    }
    Ok(p)
}

/// The table of the model in `dir`'s checkpoint: its config, with an lm_head of its own when
/// the config unties it or the checkpoint carries one anyway.
pub fn table_for_checkpoint(c: &ModelConfig, ckpt: &crate::model::safetensors_files::Checkpoint) -> Arc<ParamTable> {
    ParamTable::with_lm_head(c, !c.tie_word_embeddings || ckpt.contains(LM_HEAD.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Architecture;

    fn config(bias: bool, tied: bool) -> ModelConfig {
        ModelConfig {
            arch: Architecture::Qwen2,
            hidden_size: 8,
            intermediate_size: 12,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 2,
            vocab_size: 10,
            rms_norm_eps: 1e-6,
            rope_theta: 1e4,
            tie_word_embeddings: tied,
            qkv_bias: bias,
            max_position_embeddings: 32,
            bos_token_id: None,
            eos_token_ids: vec![],
        }
    }

    #[test]
    fn offsets_tile_the_flat_buffer_in_checkpoint_order() {
        let t = ParamTable::new(&config(true, false));
        let mut next = 0;
        for e in t.entries() {
            assert_eq!(e.offset, next, "{}", e.name);
            assert_eq!(e.len, e.shape.iter().product::<usize>());
            next += e.len;
        }
        assert_eq!(next, t.total());
        let names: Vec<&str> = t.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names[0], "model.embed_tokens.weight");
        assert_eq!(names[1], "model.layers.0.input_layernorm.weight");
        assert_eq!(names[5], "model.layers.0.self_attn.q_proj.bias");
        assert_eq!(names[names.len() - 2], "model.norm.weight");
        assert_eq!(names[names.len() - 1], "lm_head.weight");
        assert_eq!(t.entries().len(), 1 + 2 * 12 + 2);
    }

    #[test]
    fn tied_models_read_the_lm_head_from_the_embedding_and_biases_are_optional() {
        let t = ParamTable::new(&config(false, true));
        assert_eq!(t.lm_head(), t.embed());
        assert!(t.get(Kind::QBias, Some(0)).is_none());
        assert_eq!(t.entries().len(), 1 + 2 * 9 + 1);
        let p = HostParams::from_fn(&t, |e, v| v.fill(e.offset as f32));
        assert_eq!(p.lm_head()[0], 0.0);
        assert_eq!(p.layer(Kind::DownProj, 1)[0], t.entry(t.layer(Kind::DownProj, 1)).offset as f32);
    }

    #[test]
    fn iter_mut_hands_out_each_tensor_once() {
        let t = ParamTable::new(&config(true, false));
        let mut p = HostParams::zeros(&t);
        for (e, v) in p.iter_mut() {
            assert_eq!(v.len(), e.len);
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        assert!(p.flat().iter().all(|&x| x == 1.0));
    }
}
