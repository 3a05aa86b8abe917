//! The CPU backend: plain, readable f32 Rust (rayon for threads). It is the reference every
//! CUDA kernel is checked against, and it runs the embedded default on machines with no GPU.
//! One file per op family, each with its forward and backward side by side; `CpuOps` below
//! only adapts them to the `Ops` interface.
pub mod adamw;
pub mod attention;
pub mod embedding;
pub mod gemm;
pub mod grpo;
pub mod kv_cache;
pub mod linear;
pub mod logprob;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod simd;
pub mod sample;
pub mod split;
pub mod swiglu;

pub use kv_cache::KvCache;

use super::grpo::{GrpoConfig, GrpoOutput, GrpoTokens};
use super::{AdamWStep, Draw, LogProbShape, Ops, Sampled, TokenLogProbs};
use crate::model::{ModelConfig, SeqChunk};
use crate::params::{HostParams, ParamId, ParamTable};
use anyhow::{bail, ensure, Context, Result};
use attention::{AttnShape, Packing, QueryPos};
use std::sync::Arc;

/// The CPU reference backend (stateless: rayon's global pool does the threading).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuOps;

/// Where the rows of one forward sit.
pub struct CpuBatch {
    /// Token of every row.
    tokens: Vec<u32>,
    /// RoPE cos/sin tables, and which one each row uses.
    rope: Vec<(Vec<f32>, Vec<f32>)>,
    rope_of_row: Vec<usize>,
    layout: Layout,
}

enum Layout {
    /// Per row: its sequence's block table (index into `tables`) and position.
    Paged { tables: Vec<Vec<u32>>, rows: Vec<(usize, usize)> },
    Packed(Packing),
}

impl CpuBatch {
    fn queries(&self) -> Result<Vec<QueryPos<'_>>> {
        let Layout::Paged { tables, rows } = &self.layout else { bail!("paged attention over a packed batch") };
        Ok(rows.iter().map(|&(s, pos)| QueryPos { table: &tables[s], pos }).collect())
    }

    fn packing(&self) -> Result<&Packing> {
        match &self.layout {
            Layout::Packed(p) => Ok(p),
            Layout::Paged { .. } => bail!("packed-sequence attention over a paged batch"),
        }
    }

    fn rope_rows(&self) -> impl Iterator<Item = (usize, &(Vec<f32>, Vec<f32>))> {
        self.rope_of_row.iter().map(|&i| &self.rope[i]).enumerate()
    }
}

fn check_tokens(c: &ModelConfig, tokens: &[u32]) -> Result<()> {
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
        bail!("token id {t} is outside the vocabulary (size {})", c.vocab_size);
    }
    Ok(())
}

/// Each part of a column split `[rows, widths[p]]`.
fn check_parts(lens: impl ExactSizeIterator<Item = usize>, rows: usize, widths: &[usize], what: &str) -> Result<()> {
    ensure!(lens.len() == widths.len(), "{what}: {} parts for {} widths", lens.len(), widths.len());
    for (p, (len, w)) in lens.zip(widths).enumerate() {
        ensure!(len == rows * w, "{what}: part {p} holds {len} elements, not [{rows}, {w}]");
    }
    Ok(())
}

fn attn_shape(c: &ModelConfig) -> AttnShape {
    AttnShape { num_heads: c.num_heads, num_kv_heads: c.num_kv_heads, head_dim: c.head_dim }
}

/// Rows of `hidden` (`[_, h]`) gathered into `[rows.len(), h]`.
fn gather_rows(hidden: &[f32], rows: &[usize], h: usize) -> Result<Vec<f32>> {
    let avail = hidden.len() / h;
    let mut out = Vec::with_capacity(rows.len() * h);
    for &r in rows {
        ensure!(r < avail, "row {r} of {avail} hidden rows");
        out.extend_from_slice(&hidden[r * h..(r + 1) * h]);
    }
    Ok(out)
}

impl Ops for CpuOps {
    type Tensor = Vec<f32>;
    type Params = HostParams;
    type Param = [f32];
    type Cache = KvCache;
    type Batch = CpuBatch;
    type Span<'a> = &'a [f32];
    type SpanMut<'a> = &'a mut [f32];

    fn name(&self) -> String {
        "cpu (f32 reference)".to_string()
    }

    fn zeros(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn upload(&self, values: &[f32]) -> Result<Vec<f32>> {
        Ok(values.to_vec())
    }
    fn download(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(t.clone())
    }
    fn copy(&self, t: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(t.clone())
    }
    fn param<'a>(&self, p: &'a HostParams, id: ParamId) -> &'a [f32] {
        p.get(id)
    }
    fn param_mut<'a>(&self, p: &'a mut HostParams, id: ParamId) -> &'a mut [f32] {
        p.get_mut(id)
    }
    fn param_span<'a>(&self, p: &'a HostParams, first: ParamId, last: ParamId) -> Result<&'a [f32]> {
        let r = p.table().span(first, last)?;
        Ok(&p.flat()[r])
    }
    fn param_span_mut<'a>(&self, p: &'a mut HostParams, first: ParamId, last: ParamId) -> Result<&'a mut [f32]> {
        let r = p.table().span(first, last)?;
        Ok(&mut p.flat_mut()[r])
    }
    fn zeros_params(&self, table: &Arc<ParamTable>) -> Result<HostParams> {
        Ok(HostParams::zeros(table))
    }

    fn new_cache(&self, c: &ModelConfig, num_blocks: usize, block_size: usize) -> Result<KvCache> {
        Ok(KvCache::new(c.num_layers, num_blocks, block_size, c.num_kv_heads, c.head_dim))
    }

    fn paged_batch(&self, c: &ModelConfig, cache: &KvCache, chunks: &[SeqChunk]) -> Result<CpuBatch> {
        let (mut tokens, mut rows, mut tables) = (Vec::new(), Vec::new(), Vec::with_capacity(chunks.len()));
        for (s, ch) in chunks.iter().enumerate() {
            let end = ch.start_pos + ch.tokens.len();
            if end > ch.table.len() * cache.block_size {
                bail!("block table covers {} positions, the chunk needs {end}", ch.table.len() * cache.block_size);
            }
            check_tokens(c, ch.tokens)?;
            tokens.extend_from_slice(ch.tokens);
            rows.extend((ch.start_pos..end).map(|p| (s, p)));
            tables.push(ch.table.to_vec());
        }
        let rope = rows.iter().map(|&(_, p)| rope::rope_cos_sin(p, c.head_dim, c.rope_theta)).collect();
        let rope_of_row = (0..rows.len()).collect();
        Ok(CpuBatch { tokens, rope, rope_of_row, layout: Layout::Paged { tables, rows } })
    }

    fn packed_batch(&self, c: &ModelConfig, seqs: &[&[u32]]) -> Result<CpuBatch> {
        let mut tokens = Vec::new();
        for s in seqs {
            if s.is_empty() {
                bail!("a training sequence is empty");
            }
            check_tokens(c, s)?;
            tokens.extend_from_slice(s);
        }
        let pack = Packing::from_lens(&seqs.iter().map(|s| s.len()).collect::<Vec<_>>());
        let max_len = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        // One table per position 0..max_len, shared by every sequence.
        let rope = (0..max_len).map(|p| rope::rope_cos_sin(p, c.head_dim, c.rope_theta)).collect();
        let rope_of_row = pack.row_spans().iter().enumerate().map(|(r, (s, _))| r - s).collect();
        Ok(CpuBatch { tokens, rope, rope_of_row, layout: Layout::Packed(pack) })
    }

    fn embed(&self, b: &CpuBatch, table: &[f32], out: &mut Vec<f32>, c: &ModelConfig) -> Result<()> {
        embedding::embedding(&b.tokens, table, c.hidden_size, out);
        Ok(())
    }

    fn add_rmsnorm(&self, residual: &mut Vec<f32>, x: Option<&Vec<f32>>, w: &[f32], out: &mut Vec<f32>, _rows: usize, _h: usize, eps: f32) -> Result<()> {
        norm::add_rmsnorm(residual, x.map(|x| x.as_slice()), w, eps, out);
        Ok(())
    }

    fn linear(&self, x: &Vec<f32>, w: &[f32], y: &mut Vec<f32>, m: usize, n: usize, k: usize) -> Result<()> {
        linear::matmul_nt(x, w, y, m, n, k);
        Ok(())
    }

    fn add_bias(&self, y: &mut Vec<f32>, b: &[f32], _rows: usize, _n: usize) -> Result<()> {
        linear::add_bias(y, b);
        Ok(())
    }

    fn rope_qk(&self, b: &CpuBatch, q: &mut Vec<f32>, k: &mut Vec<f32>, qb: Option<&[f32]>, kb: Option<&[f32]>, c: &ModelConfig) -> Result<()> {
        for (y, bias) in [(&mut *q, qb), (&mut *k, kb)] {
            if let Some(bias) = bias {
                linear::add_bias(y, bias);
            }
        }
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        for (i, (cos, sin)) in b.rope_rows() {
            rope::rope_inplace(&mut q[i * qd..(i + 1) * qd], c.head_dim, cos, sin);
            rope::rope_inplace(&mut k[i * kvd..(i + 1) * kvd], c.head_dim, cos, sin);
        }
        Ok(())
    }

    fn kv_write(&self, b: &CpuBatch, cache: &mut KvCache, layer: usize, k: &Vec<f32>, v: &Vec<f32>, vb: Option<&[f32]>, c: &ModelConfig) -> Result<()> {
        let kvd = c.kv_dim();
        let mut v_row = vec![0f32; kvd];
        for (i, q) in b.queries()?.iter().enumerate() {
            v_row.copy_from_slice(&v[i * kvd..(i + 1) * kvd]);
            if let Some(bias) = vb {
                linear::add_bias(&mut v_row, bias);
            }
            cache.write(layer, q.table, q.pos, &k[i * kvd..(i + 1) * kvd], &v_row);
        }
        Ok(())
    }

    fn attention_paged(&self, b: &CpuBatch, cache: &KvCache, layer: usize, q: &Vec<f32>, out: &mut Vec<f32>, c: &ModelConfig) -> Result<()> {
        attention::paged_attention(q, &b.queries()?, cache, layer, c.num_heads, out);
        Ok(())
    }

    fn attention_packed(&self, b: &CpuBatch, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, out: &mut Vec<f32>, lse: &mut Vec<f32>, c: &ModelConfig) -> Result<()> {
        attention::attention_forward(q, k, v, b.packing()?, attn_shape(c), out, lse);
        Ok(())
    }

    fn split_cols(&self, src: &Vec<f32>, parts: &mut [&mut Vec<f32>], rows: usize, widths: &[usize]) -> Result<()> {
        check_parts(parts.iter().map(|p| p.len()), rows, widths, "split_cols")?;
        ensure!(src.len() == rows * widths.iter().sum::<usize>(), "split_cols: {} elements for [{rows}, {}]", src.len(), widths.iter().sum::<usize>());
        split::split_cols(src, &mut parts.iter_mut().map(|p| p.as_mut_slice()).collect::<Vec<_>>(), rows);
        Ok(())
    }

    fn swiglu(&self, gate_up: &Vec<f32>, out: &mut Vec<f32>, rows: usize, inter: usize) -> Result<()> {
        swiglu::silu_mul_fused(gate_up, out, rows, inter);
        Ok(())
    }

    fn logits(&self, hidden: &Vec<f32>, rows: &[usize], lm_head: &[f32], c: &ModelConfig) -> Result<Vec<f32>> {
        let (h, v) = (c.hidden_size, c.vocab_size);
        let picked = gather_rows(hidden, rows, h)?;
        let mut out = vec![0f32; rows.len() * v];
        linear::matmul_nt(&picked, lm_head, &mut out, rows.len(), v, h);
        Ok(out)
    }

    fn sample(&self, hidden: &Vec<f32>, rows: &[usize], lm_head: &[f32], c: &ModelConfig, draws: &[Draw]) -> Result<Vec<Sampled>> {
        ensure!(rows.len() == draws.len(), "{} rows to sample with {} draws", rows.len(), draws.len());
        let logits = self.logits(hidden, rows, lm_head, c)?;
        logits
            .chunks_exact(c.vocab_size)
            .zip(draws)
            .enumerate()
            .map(|(i, (row, d))| sample::sample_row(row, d).with_context(|| format!("sampling row {} of the batch", rows[i])))
            .collect()
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<()> {
        norm::add_inplace(x, y);
        Ok(())
    }

    fn linear_backward_input(&self, dy: &Vec<f32>, w: &[f32], dx: &mut Vec<f32>, m: usize, n: usize, k: usize) -> Result<()> {
        linear::linear_backward_input(dy, w, dx, m, n, k);
        Ok(())
    }

    fn linear_backward_weight(&self, dy: &Vec<f32>, x: &Vec<f32>, dw: &mut [f32], m: usize, n: usize, k: usize) -> Result<()> {
        linear::linear_backward_weight(dy, x, dw, m, n, k);
        Ok(())
    }

    fn bias_backward(&self, dy: &Vec<f32>, db: &mut [f32], _rows: usize, _n: usize) -> Result<()> {
        linear::bias_backward(dy, db);
        Ok(())
    }

    fn rmsnorm_backward(&self, x: &Vec<f32>, w: &[f32], dy: &Vec<f32>, dx: &mut Vec<f32>, dw: &mut [f32], _rows: usize, _h: usize, eps: f32) -> Result<()> {
        norm::rmsnorm_backward(x, w, eps, dy, dx, dw);
        Ok(())
    }

    fn rope_backward(&self, b: &CpuBatch, dq: &mut Vec<f32>, dk: &mut Vec<f32>, c: &ModelConfig) -> Result<()> {
        let (qd, kvd) = (c.q_dim(), c.kv_dim());
        for (i, (cos, sin)) in b.rope_rows() {
            rope::rope_backward_inplace(&mut dq[i * qd..(i + 1) * qd], c.head_dim, cos, sin);
            rope::rope_backward_inplace(&mut dk[i * kvd..(i + 1) * kvd], c.head_dim, cos, sin);
        }
        Ok(())
    }

    fn concat_cols(&self, parts: &[&Vec<f32>], dst: &mut Vec<f32>, rows: usize, widths: &[usize]) -> Result<()> {
        check_parts(parts.iter().map(|p| p.len()), rows, widths, "concat_cols")?;
        ensure!(dst.len() == rows * widths.iter().sum::<usize>(), "concat_cols: {} elements for [{rows}, {}]", dst.len(), widths.iter().sum::<usize>());
        split::concat_cols(&parts.iter().map(|p| p.as_slice()).collect::<Vec<_>>(), dst, rows);
        Ok(())
    }

    fn swiglu_backward(&self, gate_up: &Vec<f32>, dy: &Vec<f32>, d_gate_up: &mut Vec<f32>, rows: usize, inter: usize) -> Result<()> {
        swiglu::silu_mul_fused_backward(gate_up, dy, d_gate_up, rows, inter);
        Ok(())
    }

    fn attention_packed_backward(
        &self,
        b: &CpuBatch,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        dout: &Vec<f32>,
        dq: &mut Vec<f32>,
        dk: &mut Vec<f32>,
        dv: &mut Vec<f32>,
        c: &ModelConfig,
    ) -> Result<()> {
        attention::attention_backward(q, k, v, out, lse, dout, b.packing()?, attn_shape(c), dq, dk, dv);
        Ok(())
    }

    fn embed_backward(&self, b: &CpuBatch, dx: &Vec<f32>, d_table: &mut [f32], c: &ModelConfig) -> Result<()> {
        embedding::embedding_backward(&b.tokens, dx, c.hidden_size, d_table);
        Ok(())
    }

    fn logprobs(&self, hidden: &Vec<f32>, rows: &[usize], targets: &[u32], lm_head: &[f32], sh: LogProbShape) -> Result<TokenLogProbs> {
        let picked = gather_rows(hidden, rows, sh.hidden)?;
        Ok(logprob::logprobs_forward(&picked, lm_head, targets, sh))
    }

    fn logprobs_backward(
        &self,
        hidden: &Vec<f32>,
        rows: &[usize],
        targets: &[u32],
        lm_head: &[f32],
        fwd: &TokenLogProbs,
        d_logp: &[f32],
        d_entropy: Option<&[f32]>,
        sh: LogProbShape,
        d_hidden: &mut Vec<f32>,
        d_lm_head: &mut [f32],
    ) -> Result<()> {
        let h = sh.hidden;
        let picked = gather_rows(hidden, rows, h)?;
        let mut d_picked = vec![0f32; picked.len()];
        logprob::logprobs_backward(&picked, lm_head, targets, fwd, d_logp, d_entropy, sh, &mut d_picked, d_lm_head);
        d_hidden.fill(0.0);
        for (i, &r) in rows.iter().enumerate() {
            d_hidden[r * h..(r + 1) * h].copy_from_slice(&d_picked[i * h..(i + 1) * h]);
        }
        Ok(())
    }

    fn grpo_loss(&self, cfg: &GrpoConfig, x: &GrpoTokens) -> Result<GrpoOutput> {
        x.check(cfg)?;
        Ok(grpo::grpo_loss(cfg, x))
    }

    fn sum_squares(&self, g: &HostParams) -> Result<f64> {
        Ok(adamw::sum_squares(g.flat()))
    }

    fn scale_params(&self, g: &mut HostParams, s: f32) -> Result<()> {
        adamw::scale(g.flat_mut(), s);
        Ok(())
    }

    fn zero_params(&self, g: &mut HostParams) -> Result<()> {
        g.flat_mut().fill(0.0);
        Ok(())
    }

    fn all_reduce_params_range(&self, comm: &mut dyn crate::dist::Collective, g: &mut HostParams, range: std::ops::Range<usize>) -> Result<()> {
        comm.all_reduce_sum(&mut g.flat_mut()[range])
    }

    fn adamw_update(&self, w: &mut HostParams, g: &HostParams, m: &mut HostParams, v: &mut HostParams, s: &AdamWStep) -> Result<()> {
        for (other, what) in [(g, "gradients"), (&*m, "first moments"), (&*v, "second moments")] {
            w.check_same_table(other, what)?;
        }
        adamw::adamw_update(w.flat_mut(), g.flat(), m.flat_mut(), v.flat_mut(), s);
        Ok(())
    }

    fn needs_master(&self) -> bool {
        false
    }

    fn params_from_host(&self, h: &HostParams, _master: bool) -> Result<HostParams> {
        Ok(h.clone())
    }

    fn params_to_host(&self, p: &HostParams) -> Result<HostParams> {
        Ok(p.clone())
    }

    fn sync_weights(&self, master: &HostParams, weights: &mut HostParams) -> Result<()> {
        weights.check_same_table(master, "sync_weights")?;
        weights.flat_mut().copy_from_slice(master.flat());
        Ok(())
    }
}
