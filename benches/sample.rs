//! Criterion bench of the device sampler (kernels/sample.cu) on the GPU: one draw per row from
//! f32 logits of the 1.5B target model's vocabulary (V = 151,936) at batch 1, 32 and 128, for
//! plain temperature sampling (T = 0.6, the training configs) and with every cut on (T = 0.6,
//! top-k 50, top-p 0.95, min-p 0.02), from f32 rows (`sample_f32`) and from bf16 rows
//! (`sample_bf16`, what CudaOps samples: the lm_head GEMM's output). Beside it, with or without a GPU, the CPU reference drawing
//! one row on one core (`sample_cpu_reference`): the host path the kernel replaces. Without a GPU
//! the device part prints "skipped: no GPU (…)".
//!
//! Throughput is the napkin minimum of kernels/sample.cu's header, `Throughput::Bytes`: one read
//! of each row (V · 4 bytes, or V · 2 in bf16) plus the 32-byte parameters and 8-byte result per row, so
//! criterion's GB/s against `copy/dtod_512MiB` (same run) is the fraction of the roofline. The
//! kernel reads each row 3 times (plain) to 10 times (every cut), mostly from L2 at small batch.
//!
//! Timing: `iter_custom` around back-to-back launches, synchronised before and after (host
//! clock); input sets rotate so a round moves ≥ 256 MB of logits (up to 64 sets), and the
//! launch alone is timed (the parameter upload and 8-byte-a-row download are the op's, not the
//! kernel's). Logits are N(0, 3²): a few tokens dominate, as in a language model's rows.
//! Run: `cargo bench --bench sample -- --warm-up-time 1 --measurement-time 2`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::device::{Buffer, DType, Device};
use scalerl::ops::cpu::sample::sample_row;
use scalerl::ops::cuda::sample::{draw_params, sample_launch};
use scalerl::ops::Draw;
use scalerl::util::Rng;
use std::time::Duration;
mod common;
use common::{bench_op, copy_bench, gpu_or_skip, sets_for};

const VOCAB: usize = 151936;
const BATCH: [usize; 3] = [1, 32, 128];

/// One input set: logits, parameters, outputs.
struct Set {
    logits: Buffer,
    params: Buffer,
    tokens: Buffer,
    logprobs: Buffer,
}

fn set(dev: &Device, rows: usize, seed: u64, d: Draw, dtype: DType) -> Set {
    let mut rng = Rng::new(seed);
    let logits: Vec<f32> = (0..rows * VOCAB).map(|_| (rng.normal() * 3.0) as f32).collect();
    let params: Vec<u32> = (0..rows).flat_map(|r| draw_params(&Draw { uniform: (r as f64 + 0.5) / rows as f64, ..d }, VOCAB).unwrap()).collect();
    let logits = match dtype {
        DType::F32 => dev.upload(&logits).unwrap(),
        DType::Bf16 => dev.upload(&logits.iter().map(|&x| half::bf16::from_f32(x)).collect::<Vec<_>>()).unwrap(),
    };
    Set {
        logits: logits.typed(dtype),
        params: dev.upload(&params).unwrap(),
        tokens: dev.alloc(rows * 4).unwrap(),
        logprobs: dev.alloc(rows * 4).unwrap().typed(DType::F32),
    }
}

fn sample_bench(c: &mut Criterion, dev: &Device) {
    let plain = Draw { temperature: 0.6, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: 0.0 };
    let cuts = Draw { top_k: 50, top_p: 0.95, min_p: 0.02, ..plain };
    let mut g = c.benchmark_group("sample_f32");
    for rows in BATCH {
        for (mode, d, dtype) in [("plain", plain, DType::F32), ("cuts", cuts, DType::F32), ("plain_bf16", plain, DType::Bf16), ("cuts_bf16", cuts, DType::Bf16)] {
            let bytes = (rows * (VOCAB * dtype.size() + 32 + 8)) as u64;
            let sets: Vec<Set> = (0..sets_for(bytes)).map(|s| set(dev, rows, 10 + s as u64, d, dtype)).collect();
            bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("b{rows}_{mode}")), Throughput::Bytes(bytes), &sets, |s| {
                sample_launch(dev, &s.logits, &s.params, &s.tokens, &s.logprobs, rows, VOCAB)
            });
        }
    }
    g.finish();
}

/// The host path the device sampler replaces, for scale: the CPU reference drawing one row
/// (`sample_row`, one core). Runs with or without a GPU.
fn cpu_reference_bench(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    let row: Vec<f32> = (0..VOCAB).map(|_| (rng.normal() * 3.0) as f32).collect();
    let plain = Draw { temperature: 0.6, top_k: 0, top_p: 1.0, min_p: 0.0, uniform: 0.5 };
    let cuts = Draw { top_k: 50, top_p: 0.95, min_p: 0.02, ..plain };
    let mut g = c.benchmark_group("sample_cpu_reference");
    g.throughput(Throughput::Bytes((VOCAB * 4) as u64));
    for (mode, d) in [("plain", plain), ("cuts", cuts)] {
        g.bench_function(BenchmarkId::from_parameter(format!("b1_{mode}")), |b| b.iter(|| sample_row(&row, &d).unwrap()));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    cpu_reference_bench(c);
    let Some(dev) = gpu_or_skip() else { return };
    copy_bench(c, &dev);
    sample_bench(c, &dev);
}

criterion_group! {
    name = sample;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(sample);
