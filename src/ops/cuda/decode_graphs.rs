//! Decode steps on persistent buffers, replayed as CUDA graphs (issue 15, item 2).
//!
//! A decode step (one new token per sequence, each drawn) is the same ~400 launches every time,
//! on the same shapes: only the batch's metadata changes. So each batch-size bucket (`BUCKETS`:
//! 1, 2, 4, …, 256 sequences; a batch is padded up to the next one) gets, once, a workspace —
//! the forward's activations and fused q|k|v / gate|up buffers (`ForwardBufs`), the logits, the
//! sampler's parameters and results, and the paged-batch metadata (token ids, positions, block
//! tables, sequence ids) — and every step of that bucket runs on it:
//!
//! 1. the host writes the step's metadata into the workspace in place (one write of ids,
//!    positions and draw parameters; the block tables only where they changed), outside any
//!    capture;
//! 2. the graph of the bucket replays the forward, the lm_head GEMM and the device sampler;
//! 3. one download brings each row's token and log-prob back.
//!
//! The first step of a bucket runs the same work eagerly (a warm-up: cuBLASLt's handle and
//! plans, kernel lookups), then captures it; later steps replay. `SCALERL_CUDA_GRAPHS` picks the
//! mode (`DecodeMode`): unset or `1` graphs, `0` the same persistent buffers with every launch
//! issued eagerly (debugging, and the equality test: replay must give the same bits), `off` the
//! generic per-step path (`Transformer::forward` with fresh buffers).
//!
//! Padding: rows past the batch's sequences read token 0 at position 0 through a block table
//! that names only the cache's padding block (`DeviceKvCache::pad_block`, one block more than
//! the engine asked for, never handed to a sequence). They write their K/V there — every padded
//! row the same values to the same slot, so the overlap is benign — attend to that one key, and
//! draw greedily; their results are never read. Real rows never see them: every kernel of the
//! step works row by row (the GEMMs too: a row of x·Wᵀ reads only its own row of x).
//!
//! The split-KV plan (kernels/attention_decode.cu) is baked into a graph: its grid (splits) and
//! keys per split are launch arguments. Planning once for the longest context the workspace
//! allows would give a batch of 128 at 8K context the split of a 128K one (1 of 3 splits used:
//! a third of the SMs idle), so instead each bucket keeps one graph per context class — the
//! longest context rounded up to a power of two, at least 256 keys (below that every plan is one
//! split) — and captures a new one when a step's contexts reach the next class: a handful per
//! bucket over a rollout, each planned as `split_plan` would plan that class. The plan's
//! partial buffers belong to its graph.
//!
//! A graph bakes in pointers: the KV cache's (the workspace lives in that cache) and the
//! weights'. Weights replaced in place (`CudaModel::set_weights`) keep their addresses; a
//! different weight set drops the graphs and captures again.

use super::attention::AttentionPlan;
use super::attention_decode::{DECODE_HEAD_DIMS, DECODE_MAX_GROUP};
use super::attention_prefill::PREFILL_HEAD_DIMS;
use super::meta::TokenMeta;
use super::sample::{decode, draw_params, sample_launch, PARAM_WORDS};
use super::{CudaBatch, CudaOps, DeviceKvCache};
use crate::device::{Buffer, DType, Device, Graph};
use crate::model::{CudaModel, ForwardBufs, ModelConfig, SeqChunk};
use crate::ops::{Draw, Sampled};
use anyhow::{anyhow, ensure, Context, Result};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Batch sizes with a workspace of their own; a batch runs in the smallest that holds it.
/// Larger batches take the generic path.
pub const BUCKETS: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// The smallest context class: `split_plan` gives every context up to 256 keys one split.
const MIN_CONTEXT_CLASS: usize = 256;

/// How the CUDA backend runs decode steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Persistent buffers, one CUDA graph per bucket (and context class), replayed.
    Graphs,
    /// The same persistent buffers and plans, every launch issued eagerly (no graph).
    Eager,
    /// The generic path: fresh buffers and a plan per step, as for prefill.
    Off,
}

impl DecodeMode {
    /// `SCALERL_CUDA_GRAPHS`: unset or `1` → graphs, `0` → eager, `off` → the generic path.
    pub fn from_env() -> Result<Self> {
        match std::env::var("SCALERL_CUDA_GRAPHS").as_deref().map(str::trim) {
            Err(_) | Ok("1") | Ok("") => Ok(DecodeMode::Graphs),
            Ok("0") => Ok(DecodeMode::Eager),
            Ok("off") => Ok(DecodeMode::Off),
            Ok(other) => anyhow::bail!("SCALERL_CUDA_GRAPHS={other}: expected 1 (CUDA graphs), 0 (eager launches) or off"),
        }
    }
}

/// What the decode path has done, for tests and logs.
#[derive(Debug, Default)]
pub struct DecodeCounters {
    captures: AtomicUsize,
    replays: AtomicUsize,
    eager: AtomicUsize,
}

/// A snapshot of `DecodeCounters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Graphs captured (one per bucket and context class used).
    pub captures: usize,
    /// Steps run by replaying a graph.
    pub replays: usize,
    /// Steps run on the persistent buffers with eager launches (warm-ups and `DecodeMode::Eager`).
    pub eager_steps: usize,
}

impl DecodeCounters {
    pub fn stats(&self) -> DecodeStats {
        DecodeStats {
            captures: self.captures.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            eager_steps: self.eager.load(Ordering::Relaxed),
        }
    }
}

/// The decode workspaces of one KV cache, by bucket (held in `DeviceKvCache`).
#[derive(Default)]
pub struct DecodeWorkspaces {
    buckets: HashMap<usize, Bucket>,
    /// Address of the weights the graphs were captured with.
    weights: Option<u64>,
}

/// One bucket's persistent buffers.
struct Bucket {
    rows: usize,
    /// Width of the block-table rows (entries per sequence).
    max_blocks: usize,
    bufs: ForwardBufs<Buffer>,
    /// `[ids: rows i32 | positions: rows i32 | draw parameters: rows × PARAM_WORDS u32]`: what
    /// every step writes, in one copy.
    step: Buffer,
    ids: Buffer,
    positions: Buffer,
    seq_ids: Buffer,
    tables: Buffer,
    /// The host's copy of `tables` (what the device holds), so a step writes only changed rows.
    tables_host: Vec<i32>,
    sampling: Sampling,
    /// By context class (0 for the plain attention kernel, which has no plan).
    graphs: HashMap<usize, Captured>,
}

/// The lm_head's output and the sampler's buffers of a bucket.
struct Sampling {
    rows: usize,
    /// `[rows, vocab]` bf16.
    logits: Buffer,
    /// A view of the step buffer: `[rows × PARAM_WORDS]` u32.
    params: Buffer,
    /// `[tokens: rows i32 | log-probs: rows f32]`: one download a step.
    out: Buffer,
    tokens: Buffer,
    logprobs: Buffer,
}

/// The batch (metadata views and attention plan) a graph was captured over, and the graph.
struct Captured {
    batch: CudaBatch,
    graph: Option<Graph>,
}

/// Whether decode batches of this model run the split-KV decode kernel or the plain one, whose
/// launches depend only on the bucket (and the class); the prefill kernel, which takes decode
/// batches of GQA groups over 16, plans a host-built work list per batch.
fn graphable(c: &ModelConfig) -> bool {
    let group = c.num_heads / c.num_kv_heads.max(1);
    (DECODE_HEAD_DIMS.contains(&c.head_dim) && group <= DECODE_MAX_GROUP) || !PREFILL_HEAD_DIMS.contains(&c.head_dim)
}

/// The decode step of `model` on its persistent buffers, or None when the step is not a decode
/// step this path takes (a prompt chunk, a row without a draw, more than 256 rows, a table wider
/// than the workspace), which then runs the generic way.
pub fn decode_step(model: &CudaModel, cache: &mut DeviceKvCache, chunks: &[SeqChunk], draws: &[Option<Draw>]) -> Result<Option<Vec<Option<Sampled>>>> {
    let ops = &model.ops;
    let c = &model.config;
    let n = chunks.len();
    let mode = ops.decode_mode()?;
    if mode == DecodeMode::Off || !graphable(c) || n == 0 || n > BUCKETS[BUCKETS.len() - 1] {
        return Ok(None);
    }
    if chunks.iter().any(|ch| ch.tokens.len() != 1) || draws.iter().any(|d| d.is_none()) {
        return Ok(None);
    }
    let rows = BUCKETS.iter().copied().find(|&b| b >= n).expect("n ≤ the largest bucket");
    let max_blocks = workspace_blocks(c, cache);
    if chunks.iter().any(|ch| ch.table.len() > max_blocks) {
        return Ok(None);
    }
    // The workspace lives in the cache, whose K/V buffers the forward also takes: moved out for
    // the step, put back whatever happens.
    let mut ws = std::mem::take(&mut cache.decode);
    let result = run(model, cache, &mut ws, chunks, draws, rows, max_blocks, mode);
    cache.decode = ws;
    result.map(Some)
}

/// Block-table width of a workspace: the longest context the model takes, within the cache.
fn workspace_blocks(c: &ModelConfig, cache: &DeviceKvCache) -> usize {
    c.max_position_embeddings.div_ceil(cache.block_size).clamp(1, cache.pad_block.max(1))
}

#[allow(clippy::too_many_arguments)]
fn run(
    model: &CudaModel,
    cache: &mut DeviceKvCache,
    ws: &mut DecodeWorkspaces,
    chunks: &[SeqChunk],
    draws: &[Option<Draw>],
    rows: usize,
    max_blocks: usize,
    mode: DecodeMode,
) -> Result<Vec<Option<Sampled>>> {
    let (ops, c) = (&model.ops, &model.config);
    let dev = &*ops.dev;
    let weights = model.weights.flat().address();
    if ws.weights != Some(weights) {
        // Graphs of other weights would read those (see the module docs).
        ws.buckets.clear();
        ws.weights = Some(weights);
    }
    let b = match ws.buckets.entry(rows) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => e.insert(Bucket::new(model, cache, rows, max_blocks)?),
    };
    ensure!(b.max_blocks == max_blocks, "a decode workspace of {} table entries for a cache that needs {max_blocks}", b.max_blocks);
    let draws = draws.iter().map(|d| d.ok_or_else(|| anyhow!("a decode row without a draw"))).collect::<Result<Vec<Draw>>>()?;
    b.write_step(dev, c, cache, chunks, &draws)?;

    let longest = chunks.iter().map(|ch| ch.start_pos + 1).max().unwrap_or(1);
    let class = if DECODE_HEAD_DIMS.contains(&c.head_dim) { longest.next_power_of_two().max(MIN_CONTEXT_CLASS) } else { 0 };
    if !b.graphs.contains_key(&class) {
        let batch = b.batch_for_class(dev, c, cache, class)?;
        b.graphs.insert(class, Captured { batch, graph: None });
    }
    let captured = b.graphs.get_mut(&class).expect("inserted above");
    match (&captured.graph, mode) {
        (Some(g), DecodeMode::Graphs) => {
            g.replay()?;
            ops.decode_counters.replays.fetch_add(1, Ordering::Relaxed);
        }
        _ => {
            body(model, cache, &mut b.bufs, &b.sampling, &captured.batch)?;
            ops.decode_counters.eager.fetch_add(1, Ordering::Relaxed);
        }
    }
    let out: Vec<u32> = dev.download(&b.sampling.out)?;
    if mode == DecodeMode::Graphs && captured.graph.is_none() {
        // Warmed up by the eager run above: capture the same work for the bucket's next steps.
        let (bufs, sampling, batch) = (&mut b.bufs, &b.sampling, &captured.batch);
        let graph = dev
            .capture(|_| body(model, cache, bufs, sampling, batch))
            .with_context(|| format!("capturing the decode step of bucket {rows} (context class {class})"))?;
        captured.graph = Some(graph);
        ops.decode_counters.captures.fetch_add(1, Ordering::Relaxed);
    }
    (0..chunks.len())
        .map(|i| {
            let (token, logprob) = (out[i] as i32, f32::from_bits(out[rows + i]));
            decode(token, logprob, &draws[i], c.vocab_size).map(Some).with_context(|| format!("sampling row {i} of the batch"))
        })
        .collect()
}

impl Bucket {
    fn new(model: &CudaModel, cache: &DeviceKvCache, rows: usize, max_blocks: usize) -> Result<Self> {
        let dev = &*model.ops.dev;
        let c = &model.config;
        let step = dev.alloc(rows * (2 + PARAM_WORDS) * 4)?;
        let logits = dev.alloc(rows * c.vocab_size * 2)?.typed(DType::Bf16);
        let out = dev.alloc(rows * 2 * 4)?;
        let seq_ids = dev.upload(&(0..rows as i32).collect::<Vec<_>>())?;
        // Every row starts as a padding row: its table names only the padding block.
        let mut tables_host = vec![-1i32; rows * max_blocks];
        for r in 0..rows {
            tables_host[r * max_blocks] = cache.pad_block as i32;
        }
        let tables = dev.upload(&tables_host)?;
        let sampling = Sampling {
            rows,
            logits,
            params: step.view(rows * 8, rows * PARAM_WORDS * 4)?,
            tokens: out.view(0, rows * 4)?,
            logprobs: out.view(rows * 4, rows * 4)?.typed(DType::F32),
            out,
        };
        Ok(Bucket {
            rows,
            max_blocks,
            bufs: model.forward_buffers(rows)?,
            ids: step.view(0, rows * 4)?,
            positions: step.view(rows * 4, rows * 4)?,
            step,
            seq_ids,
            tables,
            tables_host,
            sampling,
            graphs: HashMap::new(),
        })
    }

    /// Writes the step's metadata in place: ids, positions and draw parameters in one copy, and
    /// the block-table rows that changed since the last step (rows hold a sequence's blocks in
    /// their first entries; entries past its context are never read, so stale ones may stay).
    /// Everything a kernel trusts is checked first, on the host, as `paged_batch` does, so a
    /// refused step leaves the host's copy of the tables what the device holds.
    fn write_step(&mut self, dev: &Device, c: &ModelConfig, cache: &DeviceKvCache, chunks: &[SeqChunk], draws: &[Draw]) -> Result<()> {
        let (rows, mb, bs) = (self.rows, self.max_blocks, cache.block_size);
        let pad_table = [cache.pad_block as u32];
        let pad_draw = Draw { temperature: 0.0, top_p: 1.0, top_k: 0, min_p: 0.0, uniform: 0.0 };
        let row = |r: usize| match chunks.get(r) {
            Some(ch) => (ch.tokens[0], ch.start_pos, &draws[r], ch.table),
            None => (0, 0, &pad_draw, &pad_table[..]),
        };
        let mut step = vec![0u32; rows * (2 + PARAM_WORDS)];
        for r in 0..rows {
            let (token, pos, draw, table) = row(r);
            ensure!((token as usize) < c.vocab_size, "token id {token} is outside the vocabulary (size {})", c.vocab_size);
            ensure!(pos < table.len() * bs, "sequence {r}: block table covers {} positions, the chunk needs {}", table.len() * bs, pos + 1);
            if let Some(&blk) = table.iter().find(|&&b| r < chunks.len() && b as usize >= cache.pad_block) {
                anyhow::bail!("a block table names block {blk} of a {}-block cache", cache.pad_block);
            }
            step[r] = token;
            step[rows + r] = u32::try_from(pos)?;
            let p = draw_params(draw, c.vocab_size).with_context(|| format!("sampling row {r} of the batch"))?;
            step[2 * rows + r * PARAM_WORDS..2 * rows + (r + 1) * PARAM_WORDS].copy_from_slice(&p);
        }
        let (mut first, mut last) = (usize::MAX, 0);
        for r in 0..rows {
            let table = row(r).3;
            for (dst, &blk) in self.tables_host[r * mb..r * mb + table.len()].iter_mut().zip(table) {
                if *dst != blk as i32 {
                    *dst = blk as i32;
                    (first, last) = (first.min(r), r);
                }
            }
        }
        dev.write(&self.step, &step)?;
        if first <= last {
            // One copy of the changed rows' span.
            let span = &self.tables_host[first * mb..(last + 1) * mb];
            let written = self.tables.view(first * mb * 4, span.len() * 4).and_then(|v| dev.write(&v, span));
            if written.is_err() {
                // The device may hold anything there now: the next step rewrites those rows.
                self.tables_host[first * mb..(last + 1) * mb].fill(-1);
            }
            written?;
        }
        Ok(())
    }

    /// The batch a graph of context class `class` runs over: views of the workspace's metadata,
    /// and the attention plan (the split-KV plan of a batch whose longest context is `class`).
    fn batch_for_class(&self, dev: &Device, c: &ModelConfig, cache: &DeviceKvCache, class: usize) -> Result<CudaBatch> {
        let whole = |b: &Buffer| b.view(0, b.len_bytes());
        let meta = TokenMeta {
            tokens: self.rows,
            block_size: cache.block_size,
            // Any block of the cache, the padding block included (checked per step instead).
            blocks_used: cache.num_blocks,
            num_seqs: self.rows,
            max_blocks: self.max_blocks,
            chunks: vec![(class.max(1) - 1, 1); self.rows],
            positions: whole(&self.positions)?,
            seq_ids: whole(&self.seq_ids)?,
            block_tables: whole(&self.tables)?,
        };
        let attention = AttentionPlan::new(dev, &meta, c.num_heads, c.num_kv_heads, c.head_dim)?;
        ensure!(
            matches!(attention, AttentionPlan::Decode(_) | AttentionPlan::Plain),
            "the decode workspace got the {} attention plan (its launches depend on more than the bucket)",
            attention.kernel()
        );
        Ok(CudaBatch { ids: whole(&self.ids)?, meta, attention, packed: None })
    }

}

/// A decode step's device work, allocating nothing: what a graph captures and an eager step
/// runs. The forward, the lm_head GEMM over every row's hidden state (one token per row: the
/// rows are the batch's sequences, so no gather), the sampler.
fn body(model: &CudaModel, cache: &mut DeviceKvCache, bufs: &mut ForwardBufs<Buffer>, s: &Sampling, batch: &CudaBatch) -> Result<()> {
    let (dev, c) = (&*model.ops.dev, &model.config);
    model.forward_into(batch, cache, s.rows, bufs)?;
    dev.gemm_bf16_nt(bufs.hidden(), model.lm_head(), &s.logits, s.rows, c.vocab_size, c.hidden_size)?;
    sample_launch(dev, &s.logits, &s.params, &s.tokens, &s.logprobs, s.rows, c.vocab_size)
}

impl CudaOps {
    /// This backend's decode mode: the one set by `with_decode_mode`, else `SCALERL_CUDA_GRAPHS`'s
    /// (an unknown value is an error here, at the first decode step).
    pub fn decode_mode(&self) -> Result<DecodeMode> {
        self.decode_mode.map_or_else(DecodeMode::from_env, Ok)
    }

    /// The same backend with decode steps run in `mode`, whatever the environment says (tests
    /// compare the modes in one process).
    pub fn with_decode_mode(mut self, mode: DecodeMode) -> Self {
        self.decode_mode = Some(mode);
        self
    }

    /// Captures, replays and eager steps of the decode path so far (shared by clones).
    pub fn decode_stats(&self) -> DecodeStats {
        self.decode_counters.stats()
    }
}
