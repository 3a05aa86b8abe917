//! Criterion bench of the fused lm_head log-prob (kernels/logprob.cu) and the GRPO per-token loss
//! (kernels/grpo_loss.cu) on the GPU, at the 1.5B target model's shapes (R1-Distill-Qwen-1.5B:
//! hidden 1536, vocab 151936; T = 1K, 4K and 16K scored rows; temperature 0.6; vocabulary chunks
//! of 8192, the trainer's default). Beside them, in the same run and at the same shape, the plain
//! lm_head GEMM (`Device::gemm_bf16_nt`, cuBLASLt, bf16 logits out): the target is the
//! fused op within 1.3x the time of its lm_head GEMMs alone, i.e. forward ≤ 1.3 x one GEMM and
//! backward ≤ 1.3 x two (d hidden and d lm_head are one GEMM's FLOPs each). The last line of each
//! shape prints those two ratios. Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! Throughput is FLOPs as `Throughput::Elements` (criterion's "elem/s" is FLOP/s): forward and
//! GEMM 2·T·V·H, backward 4·T·V·H (the two gradient products; the kernels also recompute the
//! logits, another 2·T·V·H, not counted). One 16K forward is 7.65 TFLOP.
//! The GRPO loss is memory-bound: its bytes (7 f32 arrays of T) are the throughput.
//!
//! Timing: `iter_custom` around back-to-back calls on the stream, synchronised before and after
//! (host clock); one input set (the op is compute-bound; the lm_head, 467 MB, does not fit L2).
//! Run: `cargo bench --bench logprob -- --warm-up-time 1 --measurement-time 2`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::device::{Buffer, Device};
use scalerl::ops::cuda::grpo_loss::{grpo_blocks, grpo_token_loss, GrpoBuffers, GRPO_SUMS};
use scalerl::ops::cuda::logprob::{logprob_backward, logprob_forward, LogProbOut, LogProbPlan};
use scalerl::ops::grpo::GrpoConfig;
use scalerl::ops::LogProbShape;
use std::time::{Duration, Instant};
mod common;
use common::{bench_op, copy_bench, gpu_or_skip, up};

const HIDDEN: usize = 1536;
const VOCAB: usize = 151936;
const ROWS: [usize; 3] = [1024, 4096, 16384];
const CHUNK: usize = 8192;

/// Every buffer of one shape.
struct Setup {
    plan: LogProbPlan,
    x: Buffer,
    w: Buffer,
    targets: Buffer,
    partials: Buffer,
    target_u: Buffer,
    out: [Buffer; 4],
    d_logp: Buffer,
    d_entropy: Buffer,
    dz: Buffer,
    dx: Buffer,
    dw: Buffer,
    logits: Buffer,
}

fn setup(dev: &Device, w: &Buffer, t: usize) -> Setup {
    let sh = LogProbShape { hidden: HIDDEN, vocab: VOCAB, temperature: 0.6, chunk: CHUNK };
    let plan = LogProbPlan::new(t, sh).unwrap();
    let f32s = |v: Vec<f32>| dev.upload(&v).unwrap();
    let targets: Vec<i32> = (0..t).map(|i| ((i as u64 * 2_654_435_761) % VOCAB as u64) as i32).collect();
    let alloc = |n: usize| dev.alloc(n).unwrap();
    Setup {
        x: up(dev, t * HIDDEN, 11, 1.0),
        w: w.view(0, w.len_bytes()).unwrap(),
        targets: dev.upload(&targets).unwrap(),
        partials: alloc(plan.partials_bytes()),
        target_u: alloc(t * 4),
        out: [alloc(t * 4), alloc(t * 4), alloc(t * 4), alloc(t * 4)],
        d_logp: f32s((0..t).map(|i| ((i % 17) as f32 - 8.0) / (8.0 * t as f32)).collect()),
        d_entropy: f32s(vec![-0.001 / t as f32; t]),
        dz: alloc(plan.dz_bytes()),
        dx: alloc(t * HIDDEN * 4),
        dw: {
            let b = alloc(VOCAB * HIDDEN * 4);
            dev.zero(&b).unwrap();
            b
        },
        logits: alloc(t * VOCAB * 2),
        plan,
    }
}

fn forward(dev: &Device, s: &Setup) -> anyhow::Result<()> {
    let out = LogProbOut { logp: &s.out[0], entropy: &s.out[1], lse: &s.out[2], mean_z: &s.out[3] };
    logprob_forward(dev, &s.plan, &s.x, &s.w, &s.targets, &s.partials, &s.target_u, &out)
}

fn backward(dev: &Device, s: &Setup) -> anyhow::Result<()> {
    logprob_backward(dev, &s.plan, &s.x, &s.w, &s.targets, &s.out[2], &s.out[3], &s.d_logp, Some(&s.d_entropy), &s.dz, &s.dx, &s.dw)
}

fn gemm(dev: &Device, s: &Setup) -> anyhow::Result<()> {
    dev.gemm_bf16_nt(&s.x, &s.w, &s.logits, s.plan.rows, VOCAB, HIDDEN)
}

/// Median wall time of `n` synchronised calls (for the ratio line; criterion's numbers are the
/// table's).
fn median(dev: &Device, n: usize, op: impl Fn() -> anyhow::Result<()>) -> f64 {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            dev.synchronize().unwrap();
            let t0 = Instant::now();
            op().unwrap();
            dev.synchronize().unwrap();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[n / 2]
}

fn logprob_bench(c: &mut Criterion, dev: &Device) {
    let w = up(dev, VOCAB * HIDDEN, 7, 9.0 / (HIDDEN as f32).sqrt());
    let mut g = c.benchmark_group("logprob");
    g.sample_size(10);
    for t in ROWS {
        let s = setup(dev, &w, t);
        let (f, b) = (s.plan.forward_flops(), s.plan.backward_flops());
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("fwd_t{t}")), Throughput::Elements(f), &[()], |_| forward(dev, &s));
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("bwd_t{t}")), Throughput::Elements(b), &[()], |_| backward(dev, &s));
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("lm_head_gemm_t{t}")), Throughput::Elements(f), &[()], |_| gemm(dev, &s));
        let (tf, tb, tg) = (median(dev, 5, || forward(dev, &s)), median(dev, 5, || backward(dev, &s)), median(dev, 5, || gemm(dev, &s)));
        println!(
            "logprob t{t} on {}: forward {:.2} ms = {:.2}x the lm_head GEMM ({:.2} ms, {:.0} TFLOP/s); backward {:.2} ms = {:.2}x two GEMMs; \
             forward + backward = {:.2}x three (target ≤ 1.3x)",
            dev.name(),
            tf * 1e3,
            tf / tg,
            tg * 1e3,
            f as f64 / tg / 1e12,
            tb * 1e3,
            tb / (2.0 * tg),
            (tf + tb) / (3.0 * tg)
        );
    }
    g.finish();
}

fn grpo_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("grpo_token_loss");
    let cfg = GrpoConfig::default();
    for t in ROWS {
        let f = |seed: u64, lo: f32, hi: f32| -> Buffer {
            let v: Vec<f32> = (0..t).map(|i| lo + (hi - lo) * (((i as u64 * 2_654_435_761 + seed) % 1000) as f32 / 1000.0)).collect();
            dev.upload(&v).unwrap()
        };
        let (logp, ent, old, reference, adv) = (f(1, -5.0, 0.0), f(2, 0.0, 3.0), f(3, -5.0, 0.0), f(4, -5.0, 0.0), f(5, -1.5, 1.5));
        let seqs = t / 512;
        let offsets: Vec<i32> = (0..=seqs).map(|s| (s * 512) as i32).collect();
        let offsets = dev.upload(&offsets).unwrap();
        let (dl, de, partials) = (dev.alloc(t * 4).unwrap(), dev.alloc(t * 4).unwrap(), dev.alloc(grpo_blocks(t) * GRPO_SUMS * 8).unwrap());
        let b = GrpoBuffers {
            logp: &logp,
            entropy: &ent,
            old_logp: &old,
            ref_logp: Some(&reference),
            advantages: &adv,
            seq_offsets: &offsets,
            d_logp: &dl,
            d_entropy: &de,
            partials: &partials,
        };
        let bytes = (7 * t * 4) as u64;
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &[()], |_| grpo_token_loss(dev, &cfg, seqs, t, &b));
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    copy_bench(c, &dev);
    logprob_bench(c, &dev);
    grpo_bench(c, &dev);
}

criterion_group! {
    name = logprob;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(logprob);
