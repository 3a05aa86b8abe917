//! What the GPU criterion benches (kernels.rs, attention_decode.rs, attention_prefill.rs)
//! share: the GPU or a "skipped: no GPU" line, random inputs, rotating input sets so large
//! shapes are not served from L2, a launch-throughput timing loop, and the device-to-device
//! copy that is each run's bandwidth ceiling.
#![allow(dead_code)] // each bench uses a subset
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use half::bf16;
use scalerl::device::{Buffer, Device};
use std::time::Instant;

/// Bytes one round over the rotating input sets should move at least (H100/H200 L2: 50 MB).
pub const ROTATE_BYTES: u64 = 256 << 20;

/// GPU 0, or None after printing "skipped: no GPU (…)".
pub fn gpu_or_skip() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => {
            println!("device: {}", d.name());
            Some(d)
        }
        Err(e) => {
            let why = format!("{e:#}");
            println!("skipped: {}", if why.starts_with("no GPU") { why } else { format!("no GPU ({why})") });
            None
        }
    }
}

/// Deterministic values in [-scale, scale) (xorshift), never all zeros.
pub fn random_bf16(n: usize, seed: u64, scale: f32) -> Vec<bf16> {
    scalerl::util::rng::symmetric_values(n, seed, scale).into_iter().map(bf16::from_f32).collect()
}

pub fn up(dev: &Device, n: usize, seed: u64, scale: f32) -> Buffer {
    dev.upload(&random_bf16(n, seed, scale)).unwrap()
}

/// How many independent input sets to rotate over for a call moving `bytes`.
pub fn sets_for(bytes: u64) -> usize {
    ROTATE_BYTES.div_ceil(bytes.max(1)).clamp(1, 64) as usize
}

/// Benches `op` on set `i % sets.len()` for iteration i, after one checked run of each set.
/// Timing: `iters` back-to-back launches on the stream, synchronised before and after (host
/// clock), so small shapes measure launch throughput as the model sees it without graphs.
pub fn bench_op<S>(
    g: &mut BenchmarkGroup<WallTime>,
    dev: &Device,
    id: BenchmarkId,
    throughput: Throughput,
    sets: &[S],
    op: impl Fn(&S) -> anyhow::Result<()>,
) {
    for s in sets {
        op(s).unwrap();
    }
    dev.synchronize().unwrap();
    g.throughput(throughput);
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            dev.synchronize().unwrap();
            let start = Instant::now();
            for i in 0..iters as usize {
                op(&sets[i % sets.len()]).unwrap();
            }
            dev.synchronize().unwrap();
            start.elapsed()
        })
    });
}

/// `copy/dtod_512MiB`: the bandwidth ceiling of this run (bytes read + written).
pub fn copy_bench(c: &mut Criterion, dev: &Device) {
    let bytes = 512usize << 20;
    let words: Vec<u32> = (0..bytes as u32 / 4).map(|i| i.wrapping_mul(2_654_435_761)).collect();
    let (src, dst) = (dev.upload(&words).unwrap(), dev.alloc(bytes).unwrap());
    drop(words);
    let mut g = c.benchmark_group("copy");
    bench_op(&mut g, dev, BenchmarkId::from_parameter("dtod_512MiB"), Throughput::Bytes(2 * bytes as u64), &[()], |_| {
        dev.copy(&src, &dst, bytes)
    });
    g.finish();
}
