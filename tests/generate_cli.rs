//! `scalerl generate --n N --max-kv-tokens K --json`: N samples of one prompt as JSON lines, and
//! a KV budget too small for them all (forcing preemption) giving the same samples as an
//! unbounded run — checkable from the shell.
use std::process::Command;

fn generate(extra: &[&str]) -> (Vec<serde_json::Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["generate", "--model", "tests/fixtures/tiny-qwen2", "--prompt", "hello world", "--temperature", "1.0"])
        .args(["--max-new-tokens", "12", "--block-size", "4", "--n", "8", "--json", "--seed", "5"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let lines = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    (lines, err)
}

#[test]
fn a_small_kv_budget_gives_the_same_samples_as_an_unbounded_run() {
    let (free, free_err) = generate(&[]);
    let (tight, tight_err) = generate(&["--max-kv-tokens", "64"]);
    assert_eq!(free.len(), 8);
    assert!(free_err.contains(" 0 preemptions"), "{free_err}");
    // 8 samples of a few prompt tokens + 12 new ones need ~32 blocks of 4: 64 tokens forces
    // preemption.
    let preempted: usize = tight_err.split(" preemptions").next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
    assert!(preempted > 0, "{tight_err}");
    let mut distinct = std::collections::BTreeSet::new();
    for (a, b) in free.iter().zip(&tight) {
        assert_eq!(a["sample"], b["sample"]);
        assert_eq!(a["seed"], b["seed"]);
        assert_eq!(a["tokens"], b["tokens"], "sample {}", a["sample"]);
        assert_eq!(a["text"], b["text"]);
        assert_eq!(a["finish"], b["finish"]);
        for (x, y) in a["logprobs"].as_array().unwrap().iter().zip(b["logprobs"].as_array().unwrap()) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "sample {}: log-prob {x} vs {y}", a["sample"]);
        }
        distinct.insert(a["tokens"].to_string());
    }
    assert!(distinct.len() > 1, "8 samples at temperature 1 were all the same");
}

#[test]
fn zero_samples_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["generate", "--model", "tests/fixtures/tiny-qwen2", "--prompt", "hi", "--n", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--n"));
}
