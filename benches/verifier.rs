//! Criterion bench: grading throughput over the labelled verifier corpus.
//!
//! Reports cases/s (`Throughput::Elements`) for
//! * `single_core`: the whole corpus graded sequentially on one thread;
//! * `batch_rayon`: the whole corpus through `grade_batch` (all cores);
//! * `typical`: the corpus without the 37 pathological cases, one thread.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scalerl::reward::{grade, grade_batch, Gold, RewardConfig};
use std::hint::black_box;

fn corpus() -> Vec<(String, Gold, bool)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/verifier/dev.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("corpus fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            (
                v["response"].as_str().expect("response").to_string(),
                Gold::from_json(&v["gold"]).expect("gold"),
                v["kind"].as_str() == Some("pathological"),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cases = corpus();
    let cfg = RewardConfig::default();
    let mut g = c.benchmark_group("verifier");
    g.sample_size(20);

    g.throughput(Throughput::Elements(cases.len() as u64));
    g.bench_function("single_core", |b| {
        b.iter(|| {
            for (r, gold, _) in &cases {
                black_box(grade(black_box(r), gold, &cfg));
            }
        })
    });

    let items: Vec<(&str, &Gold)> = cases.iter().map(|(r, g, _)| (r.as_str(), g)).collect();
    g.bench_function("batch_rayon", |b| {
        b.iter(|| black_box(grade_batch(black_box(&items), &cfg)))
    });

    let typical: Vec<&(String, Gold, bool)> = cases.iter().filter(|c| !c.2).collect();
    g.throughput(Throughput::Elements(typical.len() as u64));
    g.bench_function("typical_single_core", |b| {
        b.iter(|| {
            for (r, gold, _) in typical.iter().copied() {
                black_box(grade(black_box(r), gold, &cfg));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
