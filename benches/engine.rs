//! Criterion bench of the engine's generation loop on the CPU backend (tiny fixture model):
//! GRPO's shape, n = 8 samples of one 200-token prompt with 16 new tokens each, with the samples
//! sharing the prompt's KV blocks (`share_prompts`, the default) and without, side by side.
//!
//! Napkin math: unshared, the step that admits the group prefills 8 × 200 = 1600 tokens; shared,
//! 200 + 7 × 8 = 256 (each other sample recomputes only the tokens after the last full 16-token
//! block), so the prefill costs ~6× less; the 16 decode steps are the same. Throughput is the
//! generated tokens (8 × 16).
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use scalerl::engine::{generate, GenerateOptions, Request, SamplingParams};
use scalerl::model::Model;
use std::path::PathBuf;
use std::time::Duration;

const SAMPLES: usize = 8;
const PROMPT: usize = 200;
const NEW: usize = 16;

fn engine(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen2");
    let model = Model::load(&dir).unwrap();
    let prompt: Vec<u32> = (0..PROMPT as u32).map(|i| i * 7 % 250 + 1).collect();
    let requests: Vec<Request> = (0..SAMPLES)
        .map(|s| Request {
            prompt: prompt.clone(),
            params: SamplingParams { temperature: 1.0, seed: s as u64, max_new_tokens: NEW, ..Default::default() },
        })
        .collect();
    let mut g = c.benchmark_group("generate_tiny_qwen2");
    g.sample_size(10);
    g.throughput(Throughput::Elements((SAMPLES * NEW) as u64));
    for share in [true, false] {
        let opts = GenerateOptions { share_prompts: share, ..Default::default() };
        let id = format!("n{SAMPLES}_prompt{PROMPT}_new{NEW}_{}", if share { "shared" } else { "unshared" });
        g.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| generate(&model, &requests, &opts, |_, _, _| {}).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = engine
}
criterion_main!(benches);
