//! Criterion bench of the FlashAttention-2-style prefill attention (kernels/attention_prefill.cu)
//! on the GPU, with the attention of the 1.5B target model (R1-Distill-Qwen-1.5B: 12 query heads
//! over 2 KV heads, head_dim 128, KV blocks of 16): one sequence prefilled from 0 at 1K–24K
//! tokens, and a batch of chunked prefill (8 sequences, 512 new tokens each after 3584 cached).
//! Beside it, the plain `paged_attention_bf16` at 1K–4K tokens on the same inputs, for the ratio,
//! and a mixed batch (64 decode rows at 8K, then a 512-token prefill) split between the decode and
//! prefill kernels as the forward runs it, against the prefill kernel alone.
//! Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! Each bench reports the causal FLOPs of one call (4 · Σ_rows visible keys · head_dim · heads,
//! `PrefillPlan::flops`) as `Throughput::Elements`, so criterion's "elem/s" is FLOP/s; compare
//! with ≈ 990 TFLOP/s dense bf16 on H100/H200 (wgmma; mma.sync, which this kernel uses, tops out
//! well below) and 312 TFLOP/s on A100. One call is 3.2 GFLOP at 1K tokens, 1.9 TFLOP at 24K.
//!
//! Timing: `iter_custom` around `iters` back-to-back launches on the stream, synchronised before
//! and after (host clock). The kernel is compute-bound and its K/V reuse happens in L2 within one
//! call, so one input set is used (no rotation as in benches/kernels.rs).
//! Run: `cargo bench --bench attention_prefill -- --warm-up-time 1 --measurement-time 3`
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use scalerl::ops::cuda::attention::AttentionPlan;
use scalerl::ops::cuda::attention_prefill::{prefill_attention, PrefillPlan};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::device::{Buffer, Device};
use std::time::Duration;
mod common;
use common::{gpu_or_skip, up};

/// Benches `op` (one input set) with causal FLOPs as the throughput.
fn bench_op(g: &mut BenchmarkGroup<WallTime>, dev: &Device, id: BenchmarkId, flops: u64, op: impl Fn() -> anyhow::Result<()>) {
    common::bench_op(g, dev, id, Throughput::Elements(flops), &[()], |_| op());
}

const NH: usize = 12;
const NKV: usize = 2;
const D: usize = 128;
const KV: usize = NKV * D;
const BLOCK: usize = 16;
const PREFILL_TOKENS: [usize; 6] = [1024, 2048, 4096, 8192, 16384, 24576];
const PLAIN_TOKENS: [usize; 3] = [1024, 2048, 4096];

/// One layer's worth of inputs for `seqs` sequences, each with chunk `(start, len)` and its own
/// contiguous run of blocks.
struct Batch {
    meta: TokenMeta,
    plan: PrefillPlan,
    blocks: usize,
    q: Buffer,
    k_cache: Buffer,
    v_cache: Buffer,
    out: Buffer,
}

fn batch(dev: &Device, chunks: &[(usize, usize)]) -> Batch {
    let mut tables = Vec::new();
    let mut next = 0u32;
    for &(start, len) in chunks {
        let n = (start + len).div_ceil(BLOCK) as u32;
        tables.push((next..next + n).collect::<Vec<u32>>());
        next += n;
    }
    let seqs: Vec<(usize, usize, &[u32])> = chunks.iter().zip(&tables).map(|(&(s, l), t)| (s, l, &t[..])).collect();
    let meta = TokenMeta::upload(dev, &seqs, BLOCK).unwrap();
    let plan = PrefillPlan::new(dev, &meta).unwrap();
    let (blocks, t) = (next as usize, meta.tokens);
    Batch {
        q: up(dev, t * NH * D, 1, 2.0),
        k_cache: up(dev, blocks * BLOCK * KV, 2, 1.0),
        v_cache: up(dev, blocks * BLOCK * KV, 3, 1.0),
        out: dev.alloc(t * NH * D * 2).unwrap(),
        meta,
        plan,
        blocks,
    }
}

/// One call as the inference forward makes it: without the row log-sum-exp.
fn run_prefill(dev: &Device, b: &Batch) -> anyhow::Result<()> {
    prefill_attention(dev, &b.plan, &b.q, &b.k_cache, &b.v_cache, &b.out, None, &b.meta, b.blocks, NH, NKV, D)
}

fn prefill_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("prefill_attention_bf16");
    g.sample_size(10);
    for t in PREFILL_TOKENS {
        let b = batch(dev, &[(0, t)]);
        let flops = b.plan.flops(NH, D);
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("prefill_t{t}")), flops, || run_prefill(dev, &b));
    }
    let chunks = [(3584usize, 512usize); 8];
    let b = batch(dev, &chunks);
    let flops = b.plan.flops(NH, D);
    bench_op(&mut g, dev, BenchmarkId::from_parameter("chunked_b8_c512_ctx4096"), flops, || run_prefill(dev, &b));
    g.finish();
}

/// A continuous-batching step: 64 decode rows at 8K context, then a 512-token prefill admitted
/// beside them. The forward's plan (the decode kernel on the decode rows, the prefill kernel on
/// the chunk) against the prefill kernel on the whole batch; same FLOPs, so the elem/s ratio is
/// the speed-up of the split.
fn mixed_bench(c: &mut Criterion, dev: &Device) {
    let mut chunks = vec![(8191usize, 1usize); 64];
    chunks.push((0, 512));
    let b = batch(dev, &chunks);
    let flops = b.plan.flops(NH, D);
    let plan = AttentionPlan::new(dev, &b.meta, NH, NKV, D).unwrap();
    assert_eq!(plan.kernel(), "attention_decode+prefill_attention");
    let mut g = c.benchmark_group("mixed_attention_bf16");
    g.sample_size(10);
    bench_op(&mut g, dev, BenchmarkId::from_parameter("split_64x8k_p512"), flops, || {
        plan.run(dev, &b.q, &b.k_cache, &b.v_cache, &b.out, &b.meta, b.blocks, NH, NKV, D)
    });
    bench_op(&mut g, dev, BenchmarkId::from_parameter("prefill_only_64x8k_p512"), flops, || run_prefill(dev, &b));
    g.finish();
}

/// The plain kernel on the same prefills (same FLOPs, so the elem/s ratio is the speed-up).
fn plain_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("paged_attention_bf16");
    g.sample_size(10);
    for t in PLAIN_TOKENS {
        let b = batch(dev, &[(0, t)]);
        let flops = b.plan.flops(NH, D);
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("prefill_t{t}")), flops, || {
            k::paged_attention(dev, &b.q, &b.k_cache, &b.v_cache, &b.out, &b.meta, b.blocks, NH, NKV, D)
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    prefill_bench(c, &dev);
    mixed_bench(c, &dev);
    plain_bench(c, &dev);
}

criterion_group! {
    name = attention_prefill;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(attention_prefill);
