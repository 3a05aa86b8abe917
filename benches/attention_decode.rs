//! Criterion benches of the split-KV decode attention (kernels/attention_decode.cu) on the GPU,
//! with the attention of the 1.5B target model (12 query heads over 2 KV heads, head_dim 128,
//! blocks of 16 tokens) at batch 1, 32 and 128 and contexts 1K, 8K, 16K and 24K.
//! Without a GPU it prints "skipped: no GPU (…)" and does nothing.
//!
//! `Throughput::Bytes` is the kernel header's napkin math, the fewest bytes a decode step must
//! move: every sequence's K and V rows read once, q read, out written (the f32 split partials
//! are the kernel's own overhead and not counted), so criterion's GB/s compare directly with
//! `copy/dtod_512MiB` (a device-to-device copy, bytes read + written) in the same run.
//! `paged_attention_bf16/decode_b*_ctx*` runs the plain per-head kernel on the same inputs for
//! the side-by-side ratio, at 1K and 8K only (it is several times slower; 16K and 24K would
//! add minutes of GPU time for a ratio the 8K point already shows).
//!
//! Timing as in benches/kernels.rs: `iter_custom` around back-to-back launches (split kernel +
//! combine) between two synchronisations. The K/V of all shapes live in one random pool of
//! blocks; each shape rotates over several block tables into it (≥ 256 MB per round, up to 64
//! sets) so small shapes are not served from L2. A shape whose K/V would not fit in
//! `CACHE_LIMIT` is skipped with a note (none of the defaults: 128 x 24K is 3 GiB).
//! Run: `cargo bench --bench attention_decode -- --warm-up-time 1 --measurement-time 2`
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use scalerl::ops::cuda::attention_decode::{decode_attention, DecodePlan};
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::device::{Buffer, Device};
use std::time::Duration;
mod common;
use common::{bench_op, copy_bench, gpu_or_skip, random_bf16, sets_for, ROTATE_BYTES};

const NH: usize = 12;
const NKV: usize = 2;
const D: usize = 128;
const KV: usize = NKV * D;
const BLOCK: usize = 16;
const BATCHES: [usize; 3] = [1, 32, 128];
const CONTEXTS: [usize; 4] = [1024, 8192, 16384, 24576];
/// Contexts at which the old per-head kernel runs too.
const OLD_CONTEXTS: [usize; 2] = [1024, 8192];
/// K + V of one block of the pool.
const BLOCK_BYTES: u64 = (BLOCK * KV * 2 * 2) as u64;
/// Largest K/V pool the bench allocates.
const CACHE_LIMIT: u64 = 100 << 30;

/// `n` random bf16 values: a 32 Mi-element random pattern repeated (a memory-bound kernel does
/// not care, and generating gigabytes of random numbers on the host would).
fn random_pool(dev: &Device, n: usize, seed: u64) -> Buffer {
    let pattern = random_bf16(n.min(32 << 20), seed, 1.0);
    let data: Vec<bf16> = pattern.iter().copied().cycle().take(n).collect();
    dev.upload(&data).unwrap()
}

/// One decode batch over the pool: `seqs` sequences at position ctx − 1 whose blocks are
/// `first .. first + seqs · ctx / 16`, each sequence's contiguous; q and out of its own.
struct Set {
    meta: TokenMeta,
    q: Buffer,
    out: Buffer,
}

fn sets(dev: &Device, seqs: usize, ctx: usize, pool_blocks: usize) -> Vec<Set> {
    let per_seq = ctx.div_ceil(BLOCK);
    let call_blocks = seqs * per_seq;
    let bytes = call_blocks as u64 * BLOCK_BYTES;
    (0..sets_for(bytes))
        .map(|i| {
            let first = (i * call_blocks) % (pool_blocks - call_blocks + 1);
            let tables: Vec<Vec<u32>> =
                (0..seqs).map(|s| ((first + s * per_seq) as u32..(first + (s + 1) * per_seq) as u32).collect()).collect();
            let rows: Vec<(usize, usize, &[u32])> = tables.iter().map(|t| (ctx - 1, 1, &t[..])).collect();
            Set {
                meta: TokenMeta::upload(dev, &rows, BLOCK).unwrap(),
                q: dev.upload(&random_bf16(seqs * NH * D, 1000 + i as u64, 1.0)).unwrap(),
                out: dev.alloc(seqs * NH * D * 2).unwrap(),
            }
        })
        .collect()
}

fn decode_bench(c: &mut Criterion, dev: &Device) {
    let mut shapes = Vec::new();
    for b in BATCHES {
        for ctx in CONTEXTS {
            let kv_bytes = (b * ctx.div_ceil(BLOCK)) as u64 * BLOCK_BYTES;
            if kv_bytes > CACHE_LIMIT {
                println!("attention_decode b{b} ctx{ctx}: skipped, its K/V take {} GiB (limit {} GiB)", kv_bytes >> 30, CACHE_LIMIT >> 30);
            } else {
                shapes.push((b, ctx));
            }
        }
    }
    let Some(pool_blocks) = shapes.iter().map(|&(b, ctx)| b * ctx.div_ceil(BLOCK)).max() else { return };
    let pool_blocks = pool_blocks.max((ROTATE_BYTES / BLOCK_BYTES) as usize);
    let pool_elems = pool_blocks * BLOCK * KV;
    let (kc, vc) = (random_pool(dev, pool_elems, 1), random_pool(dev, pool_elems, 2));

    let mut new = c.benchmark_group("attention_decode");
    let mut old_shapes = Vec::new();
    for &(b, ctx) in &shapes {
        // K and V of every sequence, q in, out back.
        let bytes = (b * ctx * KV * 2 * 2 + b * NH * D * 2 * 2) as u64;
        let s = sets(dev, b, ctx, pool_blocks);
        let plan = DecodePlan::new(dev, &s[0].meta, NH, NKV, D).unwrap();
        println!("attention_decode b{b} ctx{ctx}: {} splits of {} keys", plan.num_splits, plan.keys_per_split);
        let id = BenchmarkId::from_parameter(format!("decode_b{b}_ctx{ctx}"));
        bench_op(&mut new, dev, id, Throughput::Bytes(bytes), &s, |x| {
            decode_attention(dev, &plan, &x.q, &kc, &vc, &x.out, None, &x.meta, pool_blocks)
        });
        if OLD_CONTEXTS.contains(&ctx) {
            old_shapes.push((b, ctx, bytes, s));
        }
    }
    new.finish();
    let mut old = c.benchmark_group("paged_attention_bf16");
    for (b, ctx, bytes, s) in old_shapes {
        let id = BenchmarkId::from_parameter(format!("decode_b{b}_ctx{ctx}"));
        bench_op(&mut old, dev, id, Throughput::Bytes(bytes), &s, |x| {
            k::paged_attention(dev, &x.q, &kc, &vc, &x.out, &x.meta, pool_blocks, NH, NKV, D)
        });
    }
    old.finish();
}

fn benches(c: &mut Criterion) {
    let Some(dev) = gpu_or_skip() else { return };
    copy_bench(c, &dev);
    decode_bench(c, &dev);
}

criterion_group! {
    name = attention_decode;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(attention_decode);
