//! Criterion bench of the training attention over packed sequences on the GPU
//! (kernels/attention_packed.cu, the forward with the row log-sum-exp, and
//! kernels/attention_packed_backward.cu, its deterministic FlashAttention-2-style backward) at
//! the 1.5B target's attention (R1-Distill-Qwen-1.5B: 12 query heads over 2 KV heads, head_dim
//! 128), one layer's call, on packed batches of 1K–24K tokens: one sequence of 1K, 8K and 24K
//! (the last training stage's length), 8 x 1K and 64 x 128 (8K tokens of many short sequences),
//! 4 x 4K, and a ragged batch of 7 sequences (6K down to 256, 17K tokens).
//! Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! Each bench reports the causal FLOPs of one call as `Throughput::Elements`, so criterion's
//! "elem/s" is FLOP/s: forward 4 · Σ_rows visible keys · head_dim · heads (`PackedPlan::flops`),
//! backward 2.5× that (`PackedPlan::backward_flops`, FA2's count; the kernels execute 3.5×, see
//! the kernel header). Compare with ≈ 990 TFLOP/s dense bf16 on H100/H200 (wgmma; mma.sync, which
//! these kernels use, tops out well below) and 312 TFLOP/s on A100. One 24K sequence: 1.86 TFLOP
//! forward, 4.6 TFLOP backward per layer.
//!
//! Timing: `iter_custom` around `iters` back-to-back calls on the stream (the backward is its
//! three launches), synchronised before and after (host clock). Compute-bound with its K/V reuse
//! in L2 within a call, so one input set is used.
//! Run: `cargo bench --bench attention_packed -- --warm-up-time 1 --measurement-time 3`
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use scalerl::device::{Buffer, Device};
use scalerl::ops::cuda::attention_packed::{attention_packed, attention_packed_backward, PackedPlan};
use std::time::Duration;
mod common;
use common::{gpu_or_skip, up};

const NH: usize = 12;
const NKV: usize = 2;
const D: usize = 128;

/// (name, sequence lengths)
fn batches() -> Vec<(&'static str, Vec<usize>)> {
    vec![
        ("s1x1k", vec![1024]),
        ("s1x8k", vec![8192]),
        ("s1x24k", vec![24576]),
        ("s8x1k", vec![1024; 8]),
        ("s64x128", vec![128; 64]),
        ("s4x4k", vec![4096; 4]),
        ("ragged7_17k", vec![6144, 4096, 3072, 2048, 1024, 512, 256]),
    ]
}

/// Benches `op` with `flops` per call as the throughput.
fn bench_op(g: &mut BenchmarkGroup<WallTime>, dev: &Device, id: BenchmarkId, flops: u64, op: impl Fn() -> anyhow::Result<()>) {
    common::bench_op(g, dev, id, Throughput::Elements(flops), &[()], |_| op());
}

/// One layer's tensors for a packed batch: inputs random, the forward run once so the backward
/// reads a real out and lse.
struct Layer {
    plan: PackedPlan,
    q: Buffer,
    k: Buffer,
    v: Buffer,
    out: Buffer,
    lse: Buffer,
    dout: Buffer,
    delta: Buffer,
    dq: Buffer,
    dk: Buffer,
    dv: Buffer,
}

fn layer(dev: &Device, lens: &[usize]) -> Layer {
    let plan = PackedPlan::new(dev, lens).unwrap();
    let t = plan.tokens();
    let l = Layer {
        q: up(dev, t * NH * D, 1, 2.0),
        k: up(dev, t * NKV * D, 2, 1.0),
        v: up(dev, t * NKV * D, 3, 1.0),
        out: dev.alloc(t * NH * D * 2).unwrap(),
        lse: dev.alloc(t * NH * 4).unwrap(),
        dout: up(dev, t * NH * D, 4, 1.0),
        delta: dev.alloc(t * NH * 4).unwrap(),
        dq: dev.alloc(t * NH * D * 2).unwrap(),
        dk: dev.alloc(t * NKV * D * 2).unwrap(),
        dv: dev.alloc(t * NKV * D * 2).unwrap(),
        plan,
    };
    forward(dev, &l).unwrap();
    l
}

fn forward(dev: &Device, l: &Layer) -> anyhow::Result<()> {
    attention_packed(dev, &l.plan, &l.q, &l.k, &l.v, &l.out, &l.lse, NH, NKV, D)
}

fn backward(dev: &Device, l: &Layer) -> anyhow::Result<()> {
    attention_packed_backward(dev, &l.plan, &l.q, &l.k, &l.v, &l.out, &l.lse, &l.dout, &l.delta, &l.dq, &l.dk, &l.dv, NH, NKV, D)
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    let layers: Vec<(&str, Layer)> = batches().into_iter().map(|(name, lens)| (name, layer(&dev, &lens))).collect();
    let mut g = c.benchmark_group("attention_packed_fwd");
    g.sample_size(10);
    for (name, l) in &layers {
        bench_op(&mut g, &dev, BenchmarkId::from_parameter(name), l.plan.flops(NH, D), || forward(&dev, l));
    }
    g.finish();
    let mut g = c.benchmark_group("attention_packed_bwd");
    g.sample_size(10);
    for (name, l) in &layers {
        bench_op(&mut g, &dev, BenchmarkId::from_parameter(name), l.plan.backward_flops(NH, D), || backward(&dev, l));
    }
    g.finish();
}

criterion_group! {
    name = attention_packed_benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(attention_packed_benches);
