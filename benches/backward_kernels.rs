//! Criterion benches of the backward and optimizer kernels (issue 13) on the GPU, at the shapes
//! of the 1.5B target model (R1-Distill-Qwen-1.5B: hidden 1536, 12 query heads over 2 KV heads,
//! head_dim 128, intermediate 8960, vocab 151936; 1,777 M parameters) and a micro-batch of 4096
//! tokens. Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! As benches/kernels.rs: each bench reports its kernel header's napkin bytes (the fewest bytes
//! the op must move: partial-sum scratch is not counted, so it shows as lost bandwidth) as
//! `Throughput::Bytes`, `copy/dtod_512MiB` is the run's ceiling, GEMMs report 2mnk FLOPs as
//! elements; scripts/gpu_check_table.py prints % of the copy bandwidth (target ≥ 85% for AdamW,
//! the norms and the element-wise backward) and TFLOP/s.
//!
//! The optimizer benches run over the whole flat buffer of the 1.5B model: θ, g, m, v in f32
//! (4 × 7.1 GB) and the bf16 copy (3.6 GB), filled on the device from one random slice.
//! Run: `cargo bench --bench backward_kernels -- --warm-up-time 1 --measurement-time 2`
//! (scripts/gpu-check.sh builds it for the GPU machine).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::device::{Buffer, DType, Device};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::ops::AdamWStep;
use std::time::Duration;
mod common;
use common::{bench_op, copy_bench, gpu_or_skip, random_bf16, sets_for, up};

const H: usize = 1536;
const NH: usize = 12;
const NKV: usize = 2;
const D: usize = 128;
const KV: usize = NKV * D;
const INTER: usize = 8960;
const VOCAB: usize = 151936;
const T: usize = 4096;
/// Parameters of R1-Distill-Qwen-1.5B: embedding + lm_head (2 · 151936 · 1536), 28 layers of
/// (q 1536² + k, v 256 · 1536 + o 1536² + biases 2048 + gate, up, down 3 · 8960 · 1536 + 2 norms
/// of 1536), the final norm.
const PARAMS: usize = 2 * VOCAB * H + 28 * (2 * H * H + 2 * KV * H + (H + 2 * KV) + 3 * INTER * H + 2 * H) + H;

fn elementwise_benches(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("add_bf16");
    let n = T * H;
    let bytes = 6 * n as u64;
    let sets: Vec<_> = (0..sets_for(bytes)).map(|s| (up(dev, n, 10 + s as u64, 1.0), up(dev, n, 30 + s as u64, 1.0))).collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{T}_h{H}")), Throughput::Bytes(bytes), &sets, |(x, y)| k::add::add(dev, x, y, n));
    g.finish();

    let mut g = c.benchmark_group("add_bias_bf16");
    let bytes = (4 * T * KV + 2 * KV) as u64;
    let b = up(dev, KV, 5, 0.5);
    let sets: Vec<_> = (0..sets_for(bytes)).map(|s| up(dev, T * KV, 50 + s as u64, 1.0)).collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("v_t{T}_n{KV}")), Throughput::Bytes(bytes), &sets, |y| k::add::add_bias(dev, y, &b, T, KV));
    g.finish();

    let mut g = c.benchmark_group("silu_mul_backward_bf16");
    let n = T * INTER;
    let bytes = 10 * n as u64;
    let sets: Vec<_> = (0..sets_for(bytes))
        .map(|s| {
            let s = s as u64;
            [up(dev, n, 70 + s, 4.0), up(dev, n, 140 + s, 2.0), up(dev, n, 210 + s, 1.0), dev.alloc(n * 2).unwrap(), dev.alloc(n * 2).unwrap()]
        })
        .collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{T}_i{INTER}")), Throughput::Bytes(bytes), &sets, |[gate, u, dy, dg, du]| {
        k::silu_mul_backward(dev, gate, u, dy, dg, du, n)
    });
    g.finish();

    let mut g = c.benchmark_group("rope_qk_backward_bf16");
    let bytes = (T * (NH + NKV) * D * 2 * 2 + 4 * T) as u64;
    let table: Vec<u32> = vec![0];
    let meta = TokenMeta::upload(dev, &[(0, T, &table[..])], T).unwrap();
    let sets: Vec<_> = (0..sets_for(bytes)).map(|s| (up(dev, T * NH * D, 300 + s as u64, 1.0), up(dev, T * KV, 400 + s as u64, 1.0))).collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{T}")), Throughput::Bytes(bytes), &sets, |(dq, dk)| {
        k::rope_qk_backward(dev, dq, dk, &meta, NH, NKV, D, 10000.0)
    });
    g.finish();
}

fn f32_zeros(dev: &Device, n: usize) -> Buffer {
    let b = dev.alloc(n * 4).unwrap().typed(DType::F32);
    dev.zero(&b).unwrap();
    b
}

fn reduction_benches(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("rmsnorm_backward_bf16");
    for t in [64usize, T] {
        // read x, dy; write dx; w; dw read + written (partials not counted).
        let bytes = (t * H * 2 * 3 + H * 2 + 8 * H) as u64;
        let w = up(dev, H, 1, 1.0);
        let dw = f32_zeros(dev, H);
        let sets: Vec<_> =
            (0..sets_for(bytes)).map(|s| [up(dev, t * H, 500 + s as u64, 1.0), up(dev, t * H, 600 + s as u64, 1.0), dev.alloc(t * H * 2).unwrap()]).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}_h{H}")), Throughput::Bytes(bytes), &sets, |[x, dy, dx]| {
            k::rmsnorm_backward(dev, x, &w, dy, dx, &dw, t, H, 1e-6)
        });
    }
    g.finish();

    let mut g = c.benchmark_group("bias_backward");
    for (name, n) in [("q", H), ("kv", KV)] {
        let bytes = (2 * T * n + 8 * n) as u64;
        let db = f32_zeros(dev, n);
        let sets: Vec<_> = (0..sets_for(bytes)).map(|s| up(dev, T * n, 700 + s as u64, 1.0)).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("{name}_t{T}_n{n}")), Throughput::Bytes(bytes), &sets, |dy| {
            k::colsum::bias_backward(dev, dy, &db, T, n)
        });
    }
    g.finish();

    let mut g = c.benchmark_group("embedding_backward_bf16");
    let d_table = f32_zeros(dev, VOCAB * H);
    // Tokens spread over the vocabulary, some repeated (the plan is built once per batch, on the
    // host, outside the timing).
    let tokens: Vec<u32> = (0..T).map(|i| ((i * 7919) % 3000 + (i % 7) * 20000) as u32 % VOCAB as u32).collect();
    let plan = k::EmbedGradPlan::new(dev, &tokens, VOCAB).unwrap();
    let bytes = (2 * T * H + 8 * plan.segments * H + 4 * T) as u64;
    let sets: Vec<_> = (0..sets_for(bytes)).map(|s| up(dev, T * H, 800 + s as u64, 1.0)).collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{T}_distinct{}", plan.segments)), Throughput::Bytes(bytes), &sets, |dx| {
        k::embedding_backward(dev, &plan, dx, &d_table, H, VOCAB)
    });
    g.finish();
}

fn gemm_benches(c: &mut Criterion, dev: &Device) {
    // (layer, n = output features, k = input features): dx = dy·W (NN) and dW += dyᵀ·x (TN).
    let shapes = [("qo", H, H), ("kv", KV, H), ("gate_up", INTER, H), ("down", H, INTER)];
    let m = T;
    for (group, tn) in [("gemm_bf16_nn", false), ("gemm_bf16_tn_acc_f32", true)] {
        let mut g = c.benchmark_group(group);
        for (layer, n, kk) in shapes {
            let dy = up(dev, m * n, 900, 0.05);
            let w_or_x = if tn { up(dev, m * kk, 901, 1.0) } else { up(dev, n * kk, 902, 0.05) };
            let out = if tn { f32_zeros(dev, n * kk) } else { dev.alloc(m * kk * 2).unwrap() };
            let id = BenchmarkId::from_parameter(format!("{layer}_m{m}_n{n}_k{kk}"));
            bench_op(&mut g, dev, id, Throughput::Elements(2 * (m * n * kk) as u64), &[()], |_| {
                if tn {
                    dev.gemm_bf16_tn_acc_f32(&dy, &w_or_x, &out, m, n, kk)
                } else {
                    dev.gemm_bf16_nn(&dy, &w_or_x, &out, m, n, kk)
                }
            });
        }
        g.finish();
    }
}

/// The 1.5B model's flat buffers: θ, g, m, v (f32) and the bf16 copy, from one random slice.
fn optimizer_benches(c: &mut Criterion, dev: &Device) {
    let n = PARAMS;
    let slice_len = 1 << 24;
    let fill = |seed: u64, scale: f32| -> Buffer {
        let host: Vec<f32> = random_bf16(slice_len, seed, scale).iter().map(|v| v.to_f32() * 1.0001).collect();
        let slice = dev.upload(&host).unwrap();
        let b = dev.alloc(n * 4).unwrap().typed(DType::F32);
        let mut off = 0;
        while off < n {
            let len = slice_len.min(n - off);
            dev.copy(&slice, &b.view(off * 4, len * 4).unwrap(), len * 4).unwrap();
            off += len;
        }
        b
    };
    let (w, g) = (fill(1, 0.05), fill(2, 1e-3));
    let (m, v) = (f32_zeros(dev, n), f32_zeros(dev, n));
    let w16 = dev.alloc(n * 2).unwrap().typed(DType::Bf16);
    let s = AdamWStep { beta1: 0.9, beta2: 0.999, eps: 1e-8, step_size: 1e-6, bc2_sqrt: 0.03, decay: 1.0 - 1e-8 };
    let id = format!("params_{}M", n / 1_000_000);

    let mut grp = c.benchmark_group("adamw_f32");
    bench_op(&mut grp, dev, BenchmarkId::from_parameter(&id), Throughput::Bytes(28 * n as u64), &[()], |_| {
        k::adamw::adamw_update(dev, &w, &g, &m, &v, None, n, &s)
    });
    bench_op(&mut grp, dev, BenchmarkId::from_parameter(format!("{id}_with_bf16_copy")), Throughput::Bytes(30 * n as u64), &[()], |_| {
        k::adamw::adamw_update(dev, &w, &g, &m, &v, Some(&w16), n, &s)
    });
    grp.finish();

    let mut grp = c.benchmark_group("sum_squares_f32");
    // Includes the 8-byte download (a synchronisation) each call, as the optimizer step has.
    bench_op(&mut grp, dev, BenchmarkId::from_parameter(&id), Throughput::Bytes(4 * n as u64), &[()], |_| {
        k::adamw::sum_squares(dev, &g, n).map(|_| ())
    });
    grp.finish();

    let mut grp = c.benchmark_group("scale_f32");
    bench_op(&mut grp, dev, BenchmarkId::from_parameter(&id), Throughput::Bytes(8 * n as u64), &[()], |_| k::adamw::scale(dev, &g, n, 1.0));
    grp.finish();

    let mut grp = c.benchmark_group("cast_master_f32_to_bf16");
    bench_op(&mut grp, dev, BenchmarkId::from_parameter(&id), Throughput::Bytes(6 * n as u64), &[()], |_| k::cast_f32_to_bf16(dev, &w, &w16, n));
    grp.finish();
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    copy_bench(c, &dev);
    elementwise_benches(c, &dev);
    reduction_benches(c, &dev);
    gemm_benches(c, &dev);
    optimizer_benches(c, &dev);
}

criterion_group! {
    name = backward_kernels;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(backward_kernels);
