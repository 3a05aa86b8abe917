//! The fused projections (issue 15) are really taken: a counting wrapper around a backend
//! (`Counting<O>`, every `Ops` call delegated and tallied) runs the one transformer — paged
//! forward, packed forward and backward — and each layer must issue exactly one projection GEMM
//! for q|k|v (`[q + 2·kv, hidden]`) and one for gate|up (`[2·inter, hidden]`) in the forward
//! and the weight gradient, and one for gate|up's input gradient, on the CPU reference and on
//! the CUDA backend in
//! interpret mode; q|k|v split once per layer and gate|up never (SwiGLU reads it in place). Also: the CPU's fused GEMMs give the separate GEMMs' bits in the forward and
//! the weight gradient (the input gradient sums over q|k|v in one pass: bounded here).
mod common;
use scalerl::device::Device;
use scalerl::model::{Model, ModelConfig, Save, SeqChunk, Transformer};
use scalerl::ops::cpu::{linear, matmul, CpuOps};
use scalerl::ops::cuda::{CudaOps, DeviceParams};
use scalerl::ops::grpo::{GrpoConfig, GrpoOutput, GrpoTokens};
use scalerl::ops::{AdamWStep, Draw, LogProbShape, Ops, Sampled, TokenLogProbs};
use scalerl::params::{HostParams, Kind, ParamId, ParamTable};
use anyhow::Result;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Every call of an op, by name, with its shape arguments (m, n, k or rows, where it has them).
type Log = Arc<Mutex<Vec<(&'static str, Vec<usize>)>>>;

#[derive(Clone)]
struct Counting<O> {
    inner: O,
    log: Log,
}

impl<O> Counting<O> {
    fn note(&self, op: &'static str, shape: &[usize]) {
        self.log.lock().unwrap().push((op, shape.to_vec()));
    }
}

impl<O: Ops> Ops for Counting<O> {
    type Tensor = O::Tensor;
    type Params = O::Params;
    type Param = O::Param;
    type Cache = O::Cache;
    type Batch = O::Batch;
    type Span<'a> = O::Span<'a> where Self: 'a;
    type SpanMut<'a> = O::SpanMut<'a> where Self: 'a;

    fn name(&self) -> String {
        self.note("name", &[]);
        self.inner.name()
    }
    fn zeros(&self, n: usize) -> Result<Self::Tensor> {
        self.note("zeros", &[n]);
        self.inner.zeros(n)
    }
    fn upload(&self, values: &[f32]) -> Result<Self::Tensor> {
        self.note("upload", &[]);
        self.inner.upload(values)
    }
    fn download(&self, t: &Self::Tensor) -> Result<Vec<f32>> {
        self.note("download", &[]);
        self.inner.download(t)
    }
    fn copy(&self, t: &Self::Tensor) -> Result<Self::Tensor> {
        self.note("copy", &[]);
        self.inner.copy(t)
    }
    fn param<'a>(&self, p: &'a Self::Params, id: ParamId) -> &'a Self::Param {
        self.note("param", &[]);
        self.inner.param(p, id)
    }
    fn param_mut<'a>(&self, p: &'a mut Self::Params, id: ParamId) -> &'a mut Self::Param {
        self.note("param_mut", &[]);
        self.inner.param_mut(p, id)
    }
    fn param_span<'a>(&self, p: &'a Self::Params, first: ParamId, last: ParamId) -> Result<Self::Span<'a>> {
        self.note("param_span", &[first.0, last.0]);
        self.inner.param_span(p, first, last)
    }
    fn param_span_mut<'a>(&self, p: &'a mut Self::Params, first: ParamId, last: ParamId) -> Result<Self::SpanMut<'a>> {
        self.note("param_span_mut", &[first.0, last.0]);
        self.inner.param_span_mut(p, first, last)
    }
    fn zeros_params(&self, table: &Arc<ParamTable>) -> Result<Self::Params> {
        self.note("zeros_params", &[]);
        self.inner.zeros_params(table)
    }
    fn new_cache(&self, c: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<Self::Cache> {
        self.note("new_cache", &[]);
        self.inner.new_cache(c, num_blocks, block_size)
    }
    fn paged_batch(&self, c: &ModelConfig, cache: &Self::Cache, chunks: &[SeqChunk]) -> Result<Self::Batch> {
        self.note("paged_batch", &[]);
        self.inner.paged_batch(c, cache, chunks)
    }
    fn packed_batch(&self, c: &ModelConfig, seqs: &[&[u32]]) -> Result<Self::Batch> {
        self.note("packed_batch", &[]);
        self.inner.packed_batch(c, seqs)
    }
    fn embed(&self, b: &Self::Batch, table: &Self::Param, out: &mut Self::Tensor, c: &ModelConfig) -> Result<()> {
        self.note("embed", &[]);
        self.inner.embed(b, table, out, c)
    }
    fn add_rmsnorm(&self, residual: &mut Self::Tensor, x: Option<&Self::Tensor>, w: &Self::Param, out: &mut Self::Tensor, rows: usize, hidden: usize, eps: f32) -> Result<()> {
        self.note("add_rmsnorm", &[rows]);
        self.inner.add_rmsnorm(residual, x, w, out, rows, hidden, eps)
    }
    fn linear(&self, x: &Self::Tensor, w: &Self::Param, y: &mut Self::Tensor, m: usize, n: usize, k: usize) -> Result<()> {
        self.note("linear", &[m, n, k]);
        self.inner.linear(x, w, y, m, n, k)
    }
    fn add_bias(&self, y: &mut Self::Tensor, b: &Self::Param, rows: usize, n: usize) -> Result<()> {
        self.note("add_bias", &[rows, n]);
        self.inner.add_bias(y, b, rows, n)
    }
    fn rope_qk(&self, b: &Self::Batch, q: &mut Self::Tensor, k: &mut Self::Tensor, q_bias: Option<&Self::Param>, k_bias: Option<&Self::Param>, c: &ModelConfig) -> Result<()> {
        self.note("rope_qk", &[]);
        self.inner.rope_qk(b, q, k, q_bias, k_bias, c)
    }
    fn kv_write(&self, b: &Self::Batch, cache: &mut Self::Cache, layer: usize, k: &Self::Tensor, v: &Self::Tensor, v_bias: Option<&Self::Param>, c: &ModelConfig) -> Result<()> {
        self.note("kv_write", &[]);
        self.inner.kv_write(b, cache, layer, k, v, v_bias, c)
    }
    fn attention_paged(&self, b: &Self::Batch, cache: &Self::Cache, layer: usize, q: &Self::Tensor, out: &mut Self::Tensor, c: &ModelConfig) -> Result<()> {
        self.note("attention_paged", &[]);
        self.inner.attention_paged(b, cache, layer, q, out, c)
    }
    fn attention_packed(&self, b: &Self::Batch, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, out: &mut Self::Tensor, lse: &mut Self::Tensor, c: &ModelConfig) -> Result<()> {
        self.note("attention_packed", &[]);
        self.inner.attention_packed(b, q, k, v, out, lse, c)
    }
    fn split_cols(&self, src: &Self::Tensor, parts: &mut [&mut Self::Tensor], rows: usize, widths: &[usize]) -> Result<()> {
        self.note("split_cols", &[rows]);
        self.inner.split_cols(src, parts, rows, widths)
    }
    fn swiglu(&self, gate_up: &Self::Tensor, out: &mut Self::Tensor, rows: usize, inter: usize) -> Result<()> {
        self.note("swiglu", &[rows, inter]);
        self.inner.swiglu(gate_up, out, rows, inter)
    }
    fn logits(&self, hidden: &Self::Tensor, rows: &[usize], lm_head: &Self::Param, c: &ModelConfig) -> Result<Vec<f32>> {
        self.note("logits", &[]);
        self.inner.logits(hidden, rows, lm_head, c)
    }
    fn sample(&self, hidden: &Self::Tensor, rows: &[usize], lm_head: &Self::Param, c: &ModelConfig, draws: &[Draw]) -> Result<Vec<Sampled>> {
        self.note("sample", &[]);
        self.inner.sample(hidden, rows, lm_head, c, draws)
    }
    fn add(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()> {
        self.note("add", &[]);
        self.inner.add(x, y)
    }
    fn linear_backward_input(&self, dy: &Self::Tensor, w: &Self::Param, dx: &mut Self::Tensor, m: usize, n: usize, k: usize) -> Result<()> {
        self.note("linear_backward_input", &[m, n, k]);
        self.inner.linear_backward_input(dy, w, dx, m, n, k)
    }
    fn linear_backward_weight(&self, dy: &Self::Tensor, x: &Self::Tensor, dw: &mut Self::Param, m: usize, n: usize, k: usize) -> Result<()> {
        self.note("linear_backward_weight", &[m, n, k]);
        self.inner.linear_backward_weight(dy, x, dw, m, n, k)
    }
    fn concat_cols(&self, parts: &[&Self::Tensor], dst: &mut Self::Tensor, rows: usize, widths: &[usize]) -> Result<()> {
        self.note("concat_cols", &[rows]);
        self.inner.concat_cols(parts, dst, rows, widths)
    }
    fn bias_backward(&self, dy: &Self::Tensor, db: &mut Self::Param, rows: usize, n: usize) -> Result<()> {
        self.note("bias_backward", &[rows, n]);
        self.inner.bias_backward(dy, db, rows, n)
    }
    fn rmsnorm_backward(&self, x: &Self::Tensor, w: &Self::Param, dy: &Self::Tensor, dx: &mut Self::Tensor, dw: &mut Self::Param, rows: usize, hidden: usize, eps: f32) -> Result<()> {
        self.note("rmsnorm_backward", &[rows]);
        self.inner.rmsnorm_backward(x, w, dy, dx, dw, rows, hidden, eps)
    }
    fn rope_backward(&self, b: &Self::Batch, dq: &mut Self::Tensor, dk: &mut Self::Tensor, c: &ModelConfig) -> Result<()> {
        self.note("rope_backward", &[]);
        self.inner.rope_backward(b, dq, dk, c)
    }
    fn swiglu_backward(&self, gate_up: &Self::Tensor, dy: &Self::Tensor, d_gate_up: &mut Self::Tensor, rows: usize, inter: usize) -> Result<()> {
        self.note("swiglu_backward", &[rows, inter]);
        self.inner.swiglu_backward(gate_up, dy, d_gate_up, rows, inter)
    }
    fn attention_packed_backward(&self, b: &Self::Batch, q: &Self::Tensor, k: &Self::Tensor, v: &Self::Tensor, out: &Self::Tensor, lse: &Self::Tensor, dout: &Self::Tensor, dq: &mut Self::Tensor, dk: &mut Self::Tensor, dv: &mut Self::Tensor, c: &ModelConfig) -> Result<()> {
        self.note("attention_packed_backward", &[]);
        self.inner.attention_packed_backward(b, q, k, v, out, lse, dout, dq, dk, dv, c)
    }
    fn embed_backward(&self, b: &Self::Batch, dx: &Self::Tensor, d_table: &mut Self::Param, c: &ModelConfig) -> Result<()> {
        self.note("embed_backward", &[]);
        self.inner.embed_backward(b, dx, d_table, c)
    }
    fn logprobs(&self, hidden: &Self::Tensor, rows: &[usize], targets: &[u32], lm_head: &Self::Param, sh: LogProbShape) -> Result<TokenLogProbs> {
        self.note("logprobs", &[]);
        self.inner.logprobs(hidden, rows, targets, lm_head, sh)
    }
    fn logprobs_backward(&self, hidden: &Self::Tensor, rows: &[usize], targets: &[u32], lm_head: &Self::Param, fwd: &TokenLogProbs, d_logp: &[f32], d_entropy: Option<&[f32]>, sh: LogProbShape, d_hidden: &mut Self::Tensor, d_lm_head: &mut Self::Param) -> Result<()> {
        self.note("logprobs_backward", &[]);
        self.inner.logprobs_backward(hidden, rows, targets, lm_head, fwd, d_logp, d_entropy, sh, d_hidden, d_lm_head)
    }
    fn grpo_loss(&self, cfg: &GrpoConfig, x: &GrpoTokens) -> Result<GrpoOutput> {
        self.note("grpo_loss", &[]);
        self.inner.grpo_loss(cfg, x)
    }
    fn sum_squares(&self, g: &Self::Params) -> Result<f64> {
        self.note("sum_squares", &[]);
        self.inner.sum_squares(g)
    }
    fn scale_params(&self, g: &mut Self::Params, s: f32) -> Result<()> {
        self.note("scale_params", &[]);
        self.inner.scale_params(g, s)
    }
    fn zero_params(&self, g: &mut Self::Params) -> Result<()> {
        self.note("zero_params", &[]);
        self.inner.zero_params(g)
    }
    fn adamw_update(&self, w: &mut Self::Params, g: &Self::Params, m: &mut Self::Params, v: &mut Self::Params, s: &AdamWStep) -> Result<()> {
        self.note("adamw_update", &[]);
        self.inner.adamw_update(w, g, m, v, s)
    }
    fn needs_master(&self) -> bool {
        self.note("needs_master", &[]);
        self.inner.needs_master()
    }
    fn params_from_host(&self, h: &HostParams, master: bool) -> Result<Self::Params> {
        self.note("params_from_host", &[]);
        self.inner.params_from_host(h, master)
    }
    fn params_to_host(&self, p: &Self::Params) -> Result<HostParams> {
        self.note("params_to_host", &[]);
        self.inner.params_to_host(p)
    }
    fn sync_weights(&self, master: &Self::Params, weights: &mut Self::Params) -> Result<()> {
        self.note("sync_weights", &[]);
        self.inner.sync_weights(master, weights)
    }
}

/// The ops `f` called, by name, with each call's shape arguments.
fn calls(log: &Log, f: impl FnOnce()) -> BTreeMap<&'static str, Vec<Vec<usize>>> {
    log.lock().unwrap().clear();
    f();
    let mut out: BTreeMap<&'static str, Vec<Vec<usize>>> = BTreeMap::new();
    for (op, shape) in log.lock().unwrap().drain(..) {
        out.entry(op).or_default().push(shape);
    }
    out
}

/// How many calls of `op` had (n, k) = the given shape (m, n, k as the op takes them).
fn with_nk(calls: &BTreeMap<&'static str, Vec<Vec<usize>>>, op: &str, n: usize, k: usize) -> usize {
    calls.get(op).map_or(0, |v| v.iter().filter(|s| s[1] == n && s[2] == k).count())
}

fn count(calls: &BTreeMap<&'static str, Vec<Vec<usize>>>, op: &str) -> usize {
    calls.get(op).map_or(0, |v| v.len())
}

/// The per-layer GEMM counts of the forward: one q|k|v, one o, one gate|up, one down projection.
fn check_forward(c: &ModelConfig, calls: &BTreeMap<&'static str, Vec<Vec<usize>>>, what: &str) {
    let (l, h, qd, kvd, inter) = (c.num_layers, c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    assert_eq!(count(calls, "linear"), 4 * l, "{what}: linear calls {:?}", calls.get("linear"));
    assert_eq!(with_nk(calls, "linear", qd + 2 * kvd, h), l, "{what}: one q|k|v GEMM per layer");
    assert_eq!(with_nk(calls, "linear", 2 * inter, h), l, "{what}: one gate|up GEMM per layer");
    assert_eq!(count(calls, "split_cols"), l, "{what}: one q|k|v split per layer (SwiGLU reads gate|up in place)");
    assert!(calls["swiglu"].iter().all(|s| s[1] == inter), "{what}: swiglu over [rows, inter] from gate|up");
}

/// The parameter spans `op` asked for, against the fused groups of every layer (`groups`: kinds
/// first..=last): exactly those, each once per layer — a span at the wrong offset fails here
/// even where its size is right (up|down has gate|up's size).
fn check_spans(table: &ParamTable, calls: &BTreeMap<&'static str, Vec<Vec<usize>>>, op: &str, groups: &[(Kind, Kind)], what: &str) {
    let mut want: Vec<Vec<usize>> = Vec::new();
    for l in 0..table.num_layers() {
        for &(a, b) in groups {
            if let (Some(a), Some(b)) = (table.get(a, Some(l)), table.get(b, Some(l))) {
                want.push(vec![a.0, b.0]);
            }
        }
    }
    let mut got = calls.get(op).cloned().unwrap_or_default();
    got.sort();
    want.sort();
    assert_eq!(got, want, "{what}: {op} spans (parameter ids first, last)");
}

fn check_model<O: Ops>(model: &Transformer<Counting<O>>, log: &Log, what: &str) {
    let c = model.config.clone();
    let (l, h, qd, kvd, inter) = (c.num_layers, c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let toks: Vec<u32> = (0..11).map(|i| (i * 37 + 5) % 250).collect();

    // Paged: a prefill, then a decode step.
    let mut cache = model.new_cache(4, 16).unwrap();
    let table = [0u32, 1, 2, 3];
    let fwd = calls(log, || {
        model.forward(&mut cache, &[SeqChunk { tokens: &toks, start_pos: 0, table: &table }]).unwrap();
    });
    check_forward(&c, &fwd, &format!("{what}: paged prefill"));
    let fused = [(Kind::QProj, Kind::VProj), (Kind::GateProj, Kind::UpProj)];
    check_spans(model.table(), &fwd, "param_span", &fused, &format!("{what}: paged prefill"));
    let dec = calls(log, || {
        model.forward(&mut cache, &[SeqChunk { tokens: &[9], start_pos: toks.len(), table: &table }]).unwrap();
    });
    check_forward(&c, &dec, &format!("{what}: decode"));
    assert!(dec["linear"].iter().all(|s| s[0] == 1), "{what}: decode runs one row");

    // Packed training forward and backward.
    let seqs: Vec<&[u32]> = vec![&toks, &toks[2..6]];
    let t = toks.len() + 4;
    let mut packed = None;
    let pf = calls(log, || packed = Some(model.forward_packed(&seqs, Save::All).unwrap()));
    check_forward(&c, &pf, &format!("{what}: packed forward"));
    let packed = packed.unwrap();
    let d_hidden = model.ops.upload(&(0..t * h).map(|i| ((i as f32) * 0.37).sin()).collect::<Vec<_>>()).unwrap();
    let mut grads = model.ops.zeros_params(model.table()).unwrap();
    let bw = calls(log, || model.backward(&packed, &d_hidden, &mut grads).unwrap());
    let what = format!("{what}: backward");
    check_spans(model.table(), &bw, "param_span", &[(Kind::GateProj, Kind::UpProj)], &what);
    check_spans(model.table(), &bw, "param_span_mut", &[(Kind::QProj, Kind::VProj), (Kind::QBias, Kind::VBias), (Kind::GateProj, Kind::UpProj)], &what);
    assert_eq!(count(&bw, "linear"), 0, "{what}: Save::All recomputes nothing");
    let op = "linear_backward_weight";
    assert_eq!(count(&bw, op), 4 * l, "{what}: {op} calls {:?}", bw.get(op));
    assert_eq!(with_nk(&bw, op, qd + 2 * kvd, h), l, "{what}: one q|k|v {op} per layer");
    assert_eq!(with_nk(&bw, op, 2 * inter, h), l, "{what}: one gate|up {op} per layer");
    // The input gradients: one gate|up GEMM; q|k|v's stays three GEMMs summed for now (see
    // Transformer::layer_backward: fusing it shifts the device's rounding past train_device's
    // trajectory tolerances).
    let op = "linear_backward_input";
    assert_eq!(count(&bw, op), 6 * l, "{what}: {op} calls {:?}", bw.get(op));
    assert_eq!(with_nk(&bw, op, 2 * inter, h), l, "{what}: one gate|up {op} per layer");
    assert_eq!(with_nk(&bw, op, inter, h), 0, "{what}: no separate gate or up {op}");
    assert_eq!(count(&bw, "concat_cols"), l, "{what}: one dq|dk|dv concatenation per layer (SwiGLU's backward writes d(gate|up))");
    assert_eq!(count(&bw, "swiglu_backward"), l, "{what}: swiglu_backward");
    let biases = model.table().get(Kind::QBias, Some(0)).is_some();
    assert_eq!(count(&bw, "bias_backward"), if biases { l } else { 0 }, "{what}: one q|k|v bias column sum per layer");
    // Per layer: the two residual-branch adds of dx and q|k|v's two input-gradient adds; none
    // for gate|up.
    assert_eq!(count(&bw, "add"), 4 * l, "{what}: adds {:?}", bw.get("add"));
    println!("{what}: per layer 1 q|k|v and 1 gate|up GEMM in the forward and weight gradients, 1 gate|up input-gradient GEMM ({l} layers)");
}

#[test]
fn one_gemm_for_qkv_and_one_for_gate_up_per_layer_on_cpu() {
    for name in ["tiny-qwen2", "tiny-llama"] {
        let model = Model::load(&common::fixture(name)).unwrap();
        let log: Log = Default::default();
        let ops = Counting { inner: CpuOps, log: log.clone() };
        let counted = Transformer::new(model.config.clone(), ops, model.weights.clone(), model.table().clone()).unwrap();
        check_model(&counted, &log, &format!("{name} on the CPU"));
        // The wrapper changes nothing: the same logits as the plain model.
        let toks = [3u32, 1, 4, 1, 5];
        assert_eq!(counted.sequence_logits(&toks, true).unwrap(), model.sequence_logits(&toks, true).unwrap());
    }
}

#[test]
fn one_gemm_for_qkv_and_one_for_gate_up_per_layer_on_device_ops() {
    // head_dim 64: the packed-attention kernels are built for 64 and 128.
    let model = Model::load(&common::fixture("tiny-qwen2-d64")).unwrap();
    let log: Log = Default::default();
    let inner = CudaOps::new(Device::interpret());
    let w = DeviceParams::upload(&inner.dev, &model.weights).unwrap();
    let counted = Transformer::new(model.config.clone(), Counting { inner, log: log.clone() }, w, model.table().clone()).unwrap();
    check_model(&counted, &log, "tiny-qwen2-d64 on CudaOps (interpret)");
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The CPU's fused GEMMs against the separate ones on the same values: the forward (both the
/// few-row and the packed path) and the weight gradient give the same bits — each output
/// element is the same dot product in the same order, whichever block of columns it sits in —
/// so the CPU reference's logits are unchanged by the fusion. The input gradient sums the
/// q|k|v (gate|up) terms in one reduction instead of three partial GEMMs added afterwards:
/// a reordering of f32 sums, bounded here (it measures ~1e-7 relative).
#[test]
fn cpu_fused_gemms_match_the_separate_ones() {
    let (h, parts) = (64usize, [48usize, 16, 16]);
    let n: usize = parts.iter().sum();
    let w = random(n * h, 1);
    for m in [1usize, 3, matmul::PACKED_MIN_ROWS - 1, matmul::PACKED_MIN_ROWS, 70] {
        let x = random(m * h, 2 + m as u64);
        // Forward.
        let mut fused = vec![0f32; m * n];
        linear::matmul_nt(&x, &w, &mut fused, m, n, h);
        let (mut off, mut row_off) = (0, 0);
        for &p in &parts {
            let mut y = vec![0f32; m * p];
            linear::matmul_nt(&x, &w[row_off * h..(row_off + p) * h], &mut y, m, p, h);
            for r in 0..m {
                for j in 0..p {
                    assert_eq!(y[r * p + j].to_bits(), fused[r * n + off + j].to_bits(), "forward m {m}: row {r} col {}", off + j);
                }
            }
            off += p;
            row_off += p;
        }
        // Weight gradient: dW[n, h] += dyᵀ x, one GEMM into the contiguous region.
        let dy = random(m * n, 100 + m as u64);
        let mut dw = random(n * h, 7); // accumulates onto what is there
        let mut dw_sep = dw.clone();
        linear::linear_backward_weight(&dy, &x, &mut dw, m, n, h);
        let mut off = 0;
        for &p in &parts {
            let dyp: Vec<f32> = (0..m).flat_map(|r| dy[r * n + off..r * n + off + p].to_vec()).collect();
            linear::linear_backward_weight(&dyp, &x, &mut dw_sep[off * h..(off + p) * h], m, p, h);
            off += p;
        }
        assert!(dw.iter().zip(&dw_sep).all(|(a, b)| a.to_bits() == b.to_bits()), "weight gradient m {m}: bits differ");
        // Input gradient: one reduction over n against three GEMMs summed.
        let mut dx = vec![0f32; m * h];
        linear::linear_backward_input(&dy, &w, &mut dx, m, n, h);
        let mut dx_sep = vec![0f32; m * h];
        let mut off = 0;
        for &p in &parts {
            let dyp: Vec<f32> = (0..m).flat_map(|r| dy[r * n + off..r * n + off + p].to_vec()).collect();
            let mut tmp = vec![0f32; m * h];
            linear::linear_backward_input(&dyp, &w[off * h..(off + p) * h], &mut tmp, m, p, h);
            dx_sep.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
            off += p;
        }
        let num: f64 = dx.iter().zip(&dx_sep).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
        let den: f64 = dx_sep.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        println!("input gradient m {m}: fused vs separate ‖Δ‖/‖ref‖ = {:.1e}", num / den);
        assert!(num / den < 1e-6, "input gradient m {m}: {:.2e}", num / den);
    }
}
