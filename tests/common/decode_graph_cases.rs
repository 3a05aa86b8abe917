//! Decode-graph cases written once for any `Device`: graph replay against eager launches of the
//! same steps (bit for bit), and no device allocation in steady-state decode steps.
//! tests/decode_graphs.rs runs them in interpret mode, tests/gpu.rs on a GPU.
#![allow(dead_code)]
use super::common::fixture;
use scalerl::device::Device;
use scalerl::engine::{generate_with_stats, GenerateOptions, Request, SamplingParams};
use scalerl::model::{CudaModel, Model, SeqChunk};
use scalerl::ops::cuda::decode_graphs::{DecodeMode, DecodeStats};
use scalerl::ops::cuda::CudaOps;

/// head_dim 64: decode batches take the split-KV kernel, whose plan the graphs bake in.
const MODEL: &str = "tiny-qwen2-d64";

pub fn model() -> Model {
    let mut m = Model::load(&fixture(MODEL)).unwrap();
    // RoPE takes any position: a longer context lets one sequence cross from the 256-key
    // context class into the 512 one (a second graph of its bucket).
    m.config.max_position_embeddings = 1024;
    m
}

fn cuda(dev: Device, model: &Model, mode: DecodeMode) -> CudaModel {
    CudaModel::from_model(CudaOps::new(dev).with_decode_mode(mode), model).unwrap()
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 37 + seed * 101 + 7) % 280).collect()
}

/// Six sampled requests of different prompt and completion lengths: the batch starts at 6 rows
/// (bucket 8, two padded rows) and shrinks through buckets 4, 2 and 1 as they finish; one
/// sequence runs past 256 positions.
fn requests() -> Vec<Request> {
    let shape = [(5usize, 14usize), (12, 3), (3, 22), (20, 9), (9, 6), (240, 24)];
    shape
        .iter()
        .enumerate()
        .map(|(i, &(p, n))| Request {
            prompt: prompt(p, i as u32),
            params: SamplingParams { temperature: 0.9, top_p: 0.95, top_k: 40, seed: 11 + i as u64, max_new_tokens: n, ..Default::default() },
        })
        .collect()
}

type Run = (Vec<(Vec<u32>, Vec<u32>)>, DecodeStats);

fn run(dev: Device, model: &Model, mode: DecodeMode, opts: &GenerateOptions) -> Run {
    let m = cuda(dev, model, mode);
    let (out, _) = generate_with_stats(&m, &requests(), opts, |_, _, _| {}).unwrap_or_else(|e| panic!("{mode:?}: {e:#}"));
    let bits = out.iter().map(|c| (c.tokens.clone(), c.logprobs.iter().map(|l| l.to_bits()).collect())).collect();
    (bits, m.ops.decode_stats())
}

/// Graph replay gives the bits of the same steps launched eagerly; with `exact_generic`, also
/// those of the generic per-step path (interpret mode: its GEMM is row by row, so padding changes
/// no bit; cuBLASLt may pick another algorithm for another row count).
pub fn replay_equals_eager(dev: &dyn Fn() -> Device, exact_generic: bool) {
    let model = model();
    // Blocks of 4 tokens: tables grow every 4 steps, so their rows are rewritten in place.
    for opts in [GenerateOptions { block_size: 4, ..Default::default() }, GenerateOptions::default()] {
        let (graphs, gs) = run(dev(), &model, DecodeMode::Graphs, &opts);
        let (eager, es) = run(dev(), &model, DecodeMode::Eager, &opts);
        let (generic, os) = run(dev(), &model, DecodeMode::Off, &opts);
        println!("block size {}: graphs {gs:?}, eager {es:?}", opts.block_size);
        for (i, ((g, e), o)) in graphs.iter().zip(&eager).zip(&generic).enumerate() {
            assert_eq!(g.0, e.0, "request {i}: tokens, graph replay vs eager launches");
            assert_eq!(g.1, e.1, "request {i}: log-prob bits, graph replay vs eager launches");
            // The persistent path computes what the generic one does: the same kernels, row by
            // row, with the same split plan while contexts stay within 256 keys (one split).
            // Beyond, the graph plans for its context class (512: 2 splits of 256 keys) where
            // the generic step plans for the exact context (2 splits of 192 at 258 keys): the
            // same attention, summed in other pieces, so the bits may differ from there on.
            let same = g.0.len().min(257 - requests()[i].prompt.len());
            if exact_generic {
                assert_eq!((&g.0[..same], &g.1[..same]), (&o.0[..same], &o.1[..same]), "request {i}: persistent buffers vs the generic path");
            } else {
                assert_eq!(o.0.len(), g.0.len(), "request {i}: the generic path's completion length");
            }
        }
        assert_eq!(graphs.iter().map(|g| g.0.len()).collect::<Vec<_>>(), [14, 3, 22, 9, 6, 24], "every request ran to its length");
        // Buckets 8, 4, 2 and 1 in the 256 class, and the long sequence's bucket in the 512 one.
        assert!(gs.captures >= 5, "graphs: {gs:?}");
        assert!(gs.replays > 2 * gs.captures, "most decode steps must be replays: {gs:?}");
        assert_eq!(gs.eager_steps, gs.captures, "one eager warm-up per graph: {gs:?}");
        assert_eq!((es.captures, es.replays), (0, 0), "eager mode captures nothing: {es:?}");
        assert_eq!(es.eager_steps, gs.replays + gs.eager_steps, "the same decode steps: {es:?} vs {gs:?}");
        assert_eq!(os, DecodeStats::default(), "the generic path takes no decode workspace");
    }
}

/// Decode steps after a bucket's warm-up allocate no device memory (and each replays its graph).
pub fn no_allocation_after_warm_up(dev: &dyn Fn() -> Device) {
    let model = model();
    let m = cuda(dev(), &model, DecodeMode::Graphs);
    let (bs, seqs) = (4usize, 3usize);
    let prompts: Vec<Vec<u32>> = (0..seqs).map(|s| prompt(5 + 3 * s, s as u32)).collect();
    let steps = 40;
    // Each sequence owns blocks s, s + 3, s + 6, …: its table grows by one every 4 tokens.
    let blocks_each = (prompts.iter().map(Vec::len).max().unwrap() + steps + 2).div_ceil(bs);
    let tables: Vec<Vec<u32>> = (0..seqs).map(|s| (0..blocks_each).map(|i| (s + seqs * i) as u32).collect()).collect();
    let mut cache = m.new_cache(blocks_each * seqs, bs).unwrap();
    let params = SamplingParams { temperature: 0.8, seed: 5, ..Default::default() };
    let mut tokens = prompts.clone();
    let mut step = |tokens: &mut Vec<Vec<u32>>, prefill: bool| {
        let chunks: Vec<SeqChunk> = tokens
            .iter()
            .zip(&tables)
            .map(|(t, table)| {
                let start = if prefill { 0 } else { t.len() - 1 };
                SeqChunk { tokens: &t[start..], start_pos: start, table: &table[..(t.len()).div_ceil(bs)] }
            })
            .collect();
        let draws: Vec<_> = tokens.iter().map(|t| Some(params.draw(t.len()))).collect();
        let drawn = m.step(&mut cache, &chunks, &draws).unwrap();
        drop(chunks);
        for (t, d) in tokens.iter_mut().zip(drawn) {
            t.push(d.unwrap().token);
        }
    };
    step(&mut tokens, true); // prefill: the generic path
    step(&mut tokens, false); // the bucket's warm-up: workspace, plan, eager run, capture
    let before = (m.ops.dev.allocations(), m.ops.decode_stats());
    for _ in 0..steps {
        step(&mut tokens, false);
    }
    let after = (m.ops.dev.allocations(), m.ops.decode_stats());
    assert_eq!(after.1.replays - before.1.replays, steps, "every step after the warm-up replays: {before:?} → {after:?}");
    assert_eq!(after.0, before.0, "device allocations during {steps} decode steps after warm-up");
    // The counter sees allocations: the generic path allocates every step.
    let generic = cuda(dev(), &model, DecodeMode::Off);
    let mut c2 = generic.new_cache(8, bs).unwrap();
    let table: Vec<u32> = (0..8).collect();
    let p = prompt(6, 9);
    generic.step(&mut c2, &[SeqChunk { tokens: &p, start_pos: 0, table: &table[..2] }], &[Some(params.draw(6))]).unwrap();
    let a0 = generic.ops.dev.allocations();
    generic.step(&mut c2, &[SeqChunk { tokens: &[3], start_pos: 6, table: &table[..2] }], &[Some(params.draw(7))]).unwrap();
    assert!(generic.ops.dev.allocations() > a0, "the generic decode step allocates its activations");
}
