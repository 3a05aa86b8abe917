//! Criterion benches of the CPU backend: prefill tokens/s and decode tokens/s at batch 1 and 8,
//! on the tiny fixture model and, if scripts/fetch-artifacts.sh has cached it, SmolLM2-135M.
//!
//! Napkin math for decode: every step reads all weights once (4 bytes × parameters in f32), so
//! decode tokens/s ≈ batch × memory bandwidth / weight bytes until the batch makes it FLOP-bound.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::kv::BlockAllocator;
use scalerl::ops::cpu::KvCache;
use scalerl::model::{Model, SeqChunk};
use std::path::PathBuf;

const CONTEXT: usize = 64;
const BLOCK: usize = 16;

fn models() -> Vec<(String, PathBuf)> {
    let mut out = vec![("tiny-qwen2".to_string(), PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen2"))];
    let cache = std::env::var_os("SCALERL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/scalerl"));
    let smol = cache.join("smollm2-135m-instruct");
    if smol.join("model.safetensors").exists() {
        out.push(("smollm2-135m".to_string(), smol));
    } else {
        eprintln!("skipped: SmolLM2-135M not fetched (run scripts/fetch-artifacts.sh)");
    }
    out
}

/// `batch` sequences of CONTEXT prompt tokens already in the cache.
fn prefilled(model: &Model, batch: usize) -> (KvCache, Vec<Vec<u32>>) {
    let per_seq = (CONTEXT + 1).div_ceil(BLOCK);
    let mut alloc = BlockAllocator::new(batch * per_seq, BLOCK);
    let mut cache = model.new_cache(batch * per_seq, BLOCK).unwrap();
    let tables: Vec<Vec<u32>> = (0..batch)
        .map(|_| {
            let mut t = Vec::new();
            alloc.ensure_capacity(&mut t, CONTEXT + 1).unwrap();
            t
        })
        .collect();
    let prompt: Vec<u32> = (0..CONTEXT as u32).map(|i| i % 200 + 1).collect();
    for t in &tables {
        model.forward(&mut cache, &[SeqChunk { tokens: &prompt, start_pos: 0, table: t }]).unwrap();
    }
    (cache, tables)
}

fn bench(c: &mut Criterion) {
    for (name, dir) in models() {
        let model = Model::load(&dir).unwrap();
        let mut g = c.benchmark_group(format!("cpu/{name}"));
        g.sample_size(10);
        let prompt: Vec<u32> = (0..CONTEXT as u32).map(|i| i % 200 + 1).collect();
        g.throughput(Throughput::Elements(CONTEXT as u64));
        g.bench_function(BenchmarkId::new("prefill_tokens", CONTEXT), |b| {
            let (mut cache, tables) = prefilled(&model, 1);
            b.iter(|| {
                let h = model.forward(&mut cache, &[SeqChunk { tokens: &prompt, start_pos: 0, table: &tables[0] }]).unwrap();
                model.logits(&h, &[CONTEXT - 1]).unwrap()
            })
        });
        for batch in [1usize, 8] {
            let (mut cache, tables) = prefilled(&model, batch);
            g.throughput(Throughput::Elements(batch as u64));
            // One decode step at position CONTEXT (rewritten each iteration: same cost every time).
            g.bench_function(BenchmarkId::new("decode_tokens_batch", batch), |b| {
                b.iter(|| {
                    let chunks: Vec<SeqChunk> =
                        tables.iter().map(|t| SeqChunk { tokens: &[7], start_pos: CONTEXT, table: t }).collect();
                    let h = model.forward(&mut cache, &chunks).unwrap();
                    model.logits(&h, &(0..chunks.len()).collect::<Vec<_>>()).unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
