//! Criterion benches of every CUDA kernel and the cuBLASLt GEMM on the GPU, at the shapes of the
//! 1.5B target model (R1-Distill-Qwen-1.5B: hidden 1536, 12 query heads over 2 KV heads,
//! head_dim 128, intermediate 8960, vocab 151936) and batches of 1, 64 and 4096 tokens.
//! Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! Each bench reports the napkin-math bytes of its kernel header as `Throughput::Bytes` (the
//! fewest bytes the kernel must move through device memory), so criterion prints the achieved
//! GB/s; `copy/dtod_512MiB` is the ceiling (a device-to-device copy, bytes read + written).
//! GEMMs report FLOPs (2mnk) as `Throughput::Elements` ("elem/s" = FLOP/s);
//! scripts/gpu_check_table.py turns the results into one table (GB/s, % of the copy, TFLOP/s).
//!
//! Timing: `iter_custom` around `iters` back-to-back launches on the stream, synchronised before
//! and after (host clock), so small shapes measure launch throughput, as the model would see
//! them without graphs. Inputs are random (never zeros) and rotate over enough buffer sets to
//! move ≥ 256 MB per round (up to 64 sets), so large shapes are not served from the 50 MB L2.
//! Run: `cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 2`
//! (scripts/gpu-check.sh builds it for the GPU machine).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::device::{Buffer, Device};
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
const BLOCK: usize = 16;
const TOKENS: [usize; 3] = [1, 64, 4096];
fn rmsnorm_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("rmsnorm_residual_bf16");
    for t in TOKENS {
        // read x, read + write residual, write out; the weight once.
        let bytes = (t * H * 2 * 4 + H * 2) as u64;
        let w = up(dev, H, 1, 1.0);
        let sets: Vec<_> =
            (0..sets_for(bytes)).map(|s| [up(dev, t * H, 10 + s as u64, 1.0), up(dev, t * H, 50 + s as u64, 1.0), dev.alloc(t * H * 2).unwrap()]).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &sets, |[x, res, out]| {
            // The residual grows by x each call; rmsnorm keeps the output bounded.
            k::rmsnorm_residual(dev, Some(x), res, &w, out, t, H, 1e-6)
        });
    }
    g.finish();
}

fn embedding_bench(c: &mut Criterion, dev: &Device) {
    let table = up(dev, VOCAB * H, 3, 1.0);
    let mut g = c.benchmark_group("embedding_gather_bf16");
    for t in TOKENS {
        let bytes = (4 * t * H + 4 * t) as u64;
        let sets: Vec<_> = (0..sets_for(bytes))
            .map(|s| {
                let ids: Vec<i32> = (0..t).map(|i| ((i * 7919 + s * 104729) % VOCAB) as i32).collect();
                (dev.upload(&ids).unwrap(), dev.alloc(t * H * 2).unwrap())
            })
            .collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &sets, |(ids, out)| {
            k::embedding_gather(dev, ids, &table, out, t, H, VOCAB)
        });
    }
    g.finish();
}

/// Decode-like metadata: `t` sequences of one token each at `pos`, or (for a prefill) one
/// sequence of `t` tokens from 0; blocks laid out contiguously per sequence.
fn meta(dev: &Device, t: usize, decode_pos: Option<usize>) -> (TokenMeta, usize) {
    match decode_pos {
        Some(pos) => {
            let per = (pos + 1).div_ceil(BLOCK);
            let tables: Vec<Vec<u32>> = (0..t).map(|s| ((s * per) as u32..((s + 1) * per) as u32).collect()).collect();
            let seqs: Vec<(usize, usize, &[u32])> = tables.iter().map(|tb| (pos, 1, &tb[..])).collect();
            (TokenMeta::upload(dev, &seqs, BLOCK).unwrap(), t * per)
        }
        None => {
            let n = t.div_ceil(BLOCK);
            let table: Vec<u32> = (0..n as u32).collect();
            (TokenMeta::upload(dev, &[(0, t, &table[..])], BLOCK).unwrap(), n)
        }
    }
}

fn rope_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("rope_qk_bf16");
    let (qb, kb) = (up(dev, NH * D, 5, 0.5), up(dev, KV, 6, 0.5));
    for t in TOKENS {
        // read + write q and k in place; biases; positions.
        let bytes = (t * (NH + NKV) * D * 2 * 2 + (NH + NKV) * D * 2 + 4 * t) as u64;
        let (m, _) = meta(dev, t, (t < 4096).then_some(1000));
        let sets: Vec<_> =
            (0..sets_for(bytes)).map(|s| (up(dev, t * NH * D, 20 + s as u64, 1.0), up(dev, t * KV, 40 + s as u64, 1.0))).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &sets, |(q, kk)| {
            k::rope_qk(dev, q, kk, Some(&qb), Some(&kb), &m, NH, NKV, D, 1e6)
        });
    }
    g.finish();
}

fn kv_write_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("kv_cache_write_bf16");
    let vb = up(dev, KV, 7, 0.5);
    for t in TOKENS {
        // read k, v; write both into the cache; the bias; positions, seq ids, table lookups.
        let bytes = (8 * t * KV + KV * 2 + 12 * t) as u64;
        let (m, blocks) = meta(dev, t, (t < 4096).then_some(2047));
        let (kc, vc) = (dev.alloc(blocks * BLOCK * KV * 2).unwrap(), dev.alloc(blocks * BLOCK * KV * 2).unwrap());
        let sets: Vec<_> =
            (0..sets_for(bytes)).map(|s| (up(dev, t * KV, 60 + s as u64, 1.0), up(dev, t * KV, 80 + s as u64, 1.0))).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &sets, |(kk, v)| {
            k::kv_cache_write(dev, kk, v, Some(&vb), &kc, &vc, &m, blocks, KV)
        });
    }
    g.finish();
}

fn silu_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("silu_mul_bf16");
    for t in TOKENS {
        let n = t * INTER;
        let bytes = 6 * n as u64;
        let sets: Vec<_> = (0..sets_for(bytes))
            .map(|s| (up(dev, n, 90 + s as u64, 4.0), up(dev, n, 110 + s as u64, 2.0), dev.alloc(n * 2).unwrap()))
            .collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("t{t}")), Throughput::Bytes(bytes), &sets, |(gate, u, out)| {
            k::silu_mul(dev, gate, u, out, n)
        });
    }
    g.finish();
}

/// The fused q|k|v projection's split (kernels/split_cols.cu) into q, k, v.
fn split_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("split_cols_bf16");
    for (name, widths) in [("qkv", vec![H, KV, KV])] {
        let w: usize = widths.iter().sum();
        for t in TOKENS {
            let bytes = 4 * (t * w) as u64;
            let sets: Vec<_> = (0..sets_for(bytes))
                .map(|s| (up(dev, t * w, 150 + s as u64, 1.0), widths.iter().map(|&n| dev.alloc(t * n * 2).unwrap()).collect::<Vec<_>>()))
                .collect();
            bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("{name}_t{t}")), Throughput::Bytes(bytes), &sets, |(src, parts)| {
                k::split::split_cols(dev, src, &parts.iter().collect::<Vec<_>>(), t, &widths)
            });
        }
    }
    g.finish();
}

fn cast_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("cast_bf16_to_f32");
    // The logits of 1 and 64 rows (bf16 lm_head output → f32 for the host).
    for rows in [1usize, 64] {
        let n = rows * VOCAB;
        let bytes = 6 * n as u64;
        let sets: Vec<_> = (0..sets_for(bytes)).map(|s| (up(dev, n, 130 + s as u64, 8.0), dev.alloc(n * 4).unwrap())).collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(format!("logits_r{rows}")), Throughput::Bytes(bytes), &sets, |(x, y)| {
            k::cast_bf16_to_f32(dev, x, y, n)
        });
    }
    g.finish();
    let mut g = c.benchmark_group("cast_f32_to_bf16");
    // One gate_proj weight (weight upload).
    let n = INTER * H;
    let bytes = 6 * n as u64;
    let host: Vec<f32> = random_bf16(n, 150, 0.1).iter().map(|v| v.to_f32() * 1.001).collect();
    let sets: Vec<_> = (0..sets_for(bytes)).map(|_| (dev.upload(&host).unwrap(), dev.alloc(n * 2).unwrap())).collect();
    bench_op(&mut g, dev, BenchmarkId::from_parameter("weight_8960x1536"), Throughput::Bytes(bytes), &sets, |(x, y)| {
        k::cast_f32_to_bf16(dev, x, y, n)
    });
    g.finish();
}

fn attention_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("paged_attention_bf16");
    // (name, tokens, decode position or None for one prefill from 0)
    for (name, t, pos) in [("decode_b1_ctx4096", 1usize, Some(4095usize)), ("decode_b64_ctx4096", 64, Some(4095)), ("prefill_t512", 512, None)] {
        let (m, blocks) = meta(dev, t, pos);
        let ctx_per_seq = pos.map_or(t, |p| p + 1);
        let seqs = if pos.is_some() { t } else { 1 };
        // Fewest bytes: each sequence's K and V (all KV heads) read once, q read, out written.
        let bytes = (seqs * ctx_per_seq * KV * 2 * 2 + t * NH * D * 2 * 2 + 8 * t) as u64;
        let cache_elems = blocks * BLOCK * KV;
        // Each set has its own cache too: a decode step's K/V are not in L2 (another layer's were).
        let sets: Vec<_> = (0..sets_for(bytes))
            .map(|s| {
                let s = s as u64;
                let kv = (up(dev, cache_elems, 170 + 2 * s, 1.0), up(dev, cache_elems, 171 + 2 * s, 1.0));
                (kv, up(dev, t * NH * D, 1000 + s, 1.0), dev.alloc(t * NH * D * 2).unwrap())
            })
            .collect();
        bench_op(&mut g, dev, BenchmarkId::from_parameter(name), Throughput::Bytes(bytes), &sets, |((kc, vc), q, out)| {
            k::paged_attention(dev, q, kc, vc, out, &m, blocks, NH, NKV, D)
        });
    }
    g.finish();
}

fn gemm_bench(c: &mut Criterion, dev: &Device) {
    let mut g = c.benchmark_group("gemm_bf16_nt");
    // (layer, n, k, token counts)
    let shapes: [(&str, usize, usize, &[usize]); 7] = [
        ("q_proj", H, H, &TOKENS),
        ("kv_proj", KV, H, &[64]),
        // The fused projections the model runs (issue 15): one GEMM for q|k|v, one for gate|up.
        ("qkv_fused", H + 2 * KV, H, &TOKENS),
        ("gate_up_fused", 2 * INTER, H, &TOKENS),
        ("gate_up", INTER, H, &TOKENS),
        ("down", H, INTER, &TOKENS),
        ("lm_head", VOCAB, H, &[64]),
    ];
    for (layer, n, kk, tokens) in shapes {
        let w_bytes = (n * kk * 2) as u64;
        let w_sets: Vec<Buffer> = (0..sets_for(w_bytes)).map(|s| up(dev, n * kk, 200 + s as u64, 0.05)).collect();
        for &m in tokens {
            let x = up(dev, m * kk, 300, 1.0);
            let y = dev.alloc(m * n * 2).unwrap();
            // FLOPs as "elements"; the id carries the shape so the table can count bytes too.
            let id = BenchmarkId::from_parameter(format!("{layer}_m{m}_n{n}_k{kk}"));
            bench_op(&mut g, dev, id, Throughput::Elements(2 * (m * n * kk) as u64), &w_sets, |w| dev.gemm_bf16_nt(&x, w, &y, m, n, kk));
        }
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    copy_bench(c, &dev);
    rmsnorm_bench(c, &dev);
    embedding_bench(c, &dev);
    rope_bench(c, &dev);
    kv_write_bench(c, &dev);
    silu_bench(c, &dev);
    split_bench(c, &dev);
    cast_bench(c, &dev);
    attention_bench(c, &dev);
    gemm_bench(c, &dev);
}

criterion_group! {
    name = kernels;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(kernels);
