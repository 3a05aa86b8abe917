//! Grades the labelled verifier corpus (tests/fixtures/verifier/dev.jsonl)
//! and checks accuracy against the two anchors recorded in it
//! (DeepScaleR's grader and math-verify), plus the time bound on
//! pathological inputs.
//!
//! Run with `--nocapture` to see the per-kind table and the misgraded cases.

use scalerl::reward::{grade, Gold, RewardConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

struct Case {
    id: String,
    kind: String,
    response: String,
    gold: Gold,
    label: bool,
    deepscaler: bool,
    math_verify: bool,
}

fn load() -> Vec<Case> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/verifier/dev.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("corpus fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            let flag = |k: &str| v[k].as_i64().map(|x| x == 1).or(v[k].as_bool()).expect(k);
            Case {
                id: v["id"].as_str().expect("id").to_string(),
                kind: v["kind"].as_str().expect("kind").to_string(),
                response: v["response"].as_str().expect("response").to_string(),
                gold: Gold::from_json(&v["gold"]).expect("gold"),
                label: flag("label"),
                deepscaler: flag("deepscaler"),
                math_verify: flag("math_verify"),
            }
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    n: usize,
    ours: usize,
    ds: usize,
    mv: usize,
}

impl Tally {
    fn pct(x: usize, n: usize) -> f64 {
        100.0 * x as f64 / n.max(1) as f64
    }
}

#[test]
fn corpus_accuracy_and_bounds() {
    let cases = load();
    assert_eq!(cases.len(), 1500, "fixture should hold the full dev corpus");
    let cfg = RewardConfig::default();

    let mut total = Tally::default();
    let mut kinds: BTreeMap<String, Tally> = BTreeMap::new();
    let mut misses = Vec::new();
    let mut slow_pathological = Vec::new();
    let mut max_patho = Duration::ZERO;
    let start = Instant::now();

    let mut times = Vec::with_capacity(cases.len());
    for c in &cases {
        let t0 = Instant::now();
        let g = grade(&c.response, &c.gold, &cfg);
        times.push(t0.elapsed());
        let ours = g.reward == cfg.correct_reward;
        if c.kind == "pathological" {
            // Min of three runs: the bound is about our work, not about the
            // scheduler of a shared CI machine.
            let t = (0..3)
                .map(|_| {
                    let t0 = Instant::now();
                    std::hint::black_box(grade(&c.response, &c.gold, &cfg));
                    t0.elapsed()
                })
                .min()
                .unwrap_or_default();
            max_patho = max_patho.max(t);
            if t > Duration::from_millis(50) {
                slow_pathological.push(format!("{} took {:?}", c.id, t));
            }
        }
        for t in [&mut total, kinds.entry(c.kind.clone()).or_default()] {
            t.n += 1;
            t.ours += (ours == c.label) as usize;
            t.ds += (c.deepscaler == c.label) as usize;
            t.mv += (c.math_verify == c.label) as usize;
        }
        if ours != c.label {
            misses.push(format!(
                "{} [{}] label={} ours={} ({}) answer={:?} gold={:?}",
                c.id,
                c.kind,
                c.label as u8,
                ours as u8,
                g.reason.as_str(),
                g.answer
                    .as_deref()
                    .map(|a| a.chars().take(120).collect::<String>()),
                c.gold
            ));
        }
    }
    let elapsed = start.elapsed();

    println!(
        "{:<34} {:>5} {:>8} {:>8} {:>8}",
        "kind", "n", "ours", "ds", "mv"
    );
    for (k, t) in &kinds {
        println!(
            "{:<34} {:>5} {:>7.1}% {:>7.1}% {:>7.1}%",
            k,
            t.n,
            Tally::pct(t.ours, t.n),
            Tally::pct(t.ds, t.n),
            Tally::pct(t.mv, t.n)
        );
    }
    let acc = total.ours as f64 / total.n as f64;
    println!(
        "{:<34} {:>5} {:>7.2}% {:>7.2}% {:>7.2}%",
        "OVERALL",
        total.n,
        100.0 * acc,
        Tally::pct(total.ds, total.n),
        Tally::pct(total.mv, total.n)
    );
    times.sort();
    let mean_us = times.iter().map(|t| t.as_secs_f64()).sum::<f64>() * 1e6 / times.len() as f64;
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "per case (one thread): mean {mean_us:.1} µs, median {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    );
    println!(
        "max pathological time (best of 3): {max_patho:?}; whole pass (incl. repeats): {elapsed:?}"
    );
    for m in &misses {
        println!("MISS {m}");
    }

    assert!(
        slow_pathological.is_empty(),
        "slow pathological cases: {slow_pathological:#?}"
    );
    for (k, t) in &kinds {
        assert!(
            t.ours >= t.ds.max(t.mv),
            "kind {k}: ours {} / {} below an anchor (ds {}, mv {})",
            t.ours,
            t.n,
            t.ds,
            t.mv
        );
    }
    assert!(acc >= 0.995, "overall accuracy {:.4} below 0.995", acc);
    // The speed goal is for optimized builds (`cargo test --release`); the
    // criterion bench `benches/verifier.rs` measures it properly.
    if !cfg!(debug_assertions) {
        assert!(mean_us < 50.0, "mean {mean_us:.1} µs per case");
    }
}
