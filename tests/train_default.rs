//! The embedded default run of `scalerl train` (no `--config`), shortened: a tiny SFT warm start
//! and 2 GRPO steps write the same files as any run; SFT alone lifts held-out accuracy above
//! chance; the synthetic targets are graded correct by the math reward.
use scalerl::model::{Model, ModelConfig};
use scalerl::reward::{grade, Gold, RewardConfig};
use scalerl::train::default_run::{
    accuracy, init_weights, model_config_json, problems, run_default, sft, write_model_dir, DefaultRunOptions,
};
use scalerl::train::metrics::read_metrics;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalerl-train-default-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn targets_are_graded_correct() {
    let (train, eval) = problems(50, 20, 3);
    assert_eq!(eval.len(), 20);
    assert_eq!(train.len() + eval.len(), 2500);
    assert!(eval.iter().all(|p| !train.contains(p)));
    let rc = RewardConfig::default();
    for p in train.iter().take(50) {
        let gold = Gold::from_json(&serde_json::json!(p.answer().to_string())).unwrap();
        assert_eq!(grade(&p.target(), &gold, &rc).reward, rc.correct_reward, "{}", p.target());
    }
}

#[test]
fn short_default_run_writes_a_run() {
    let dir = tmp("short");
    let o = DefaultRunOptions {
        run_dir: dir.clone(),
        seed: 5,
        max_operand: 20,
        sft_steps: 10,
        sft_batch: 8,
        grpo_steps: 2,
        grpo_batch_prompts: 2,
        grpo_n: 4,
        eval_problems: 8,
        progress: false,
        ..DefaultRunOptions::default()
    };
    let s = run_default(&o).unwrap();
    assert_eq!(s.train.steps, 2);
    assert!((0.0..=1.0).contains(&s.start_accuracy) && (0.0..=1.0).contains(&s.end_accuracy));
    assert!(s.sft_loss.is_finite());
    for f in ["config.toml", "metrics.jsonl", "latest", "train.json", "sft-model/config.json", "sft-model/model.safetensors", "sft-model/tokenizer.json", "step-2/model.safetensors", "step-2/trainer_state.json"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let m = read_metrics(&dir.join("metrics.jsonl")).unwrap().0;
    assert_eq!(m.len(), 2);
    assert_eq!(m[1].n, 4);
    // The checkpoint is a Hugging Face model directory.
    let loaded = Model::load(&dir.join("step-2")).unwrap();
    assert_eq!(loaded.config.hidden_size, 64);
    // A second default run into the same directory is refused before any work.
    assert!(run_default(&o).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// SFT alone (single-digit sums, a few hundred steps) beats chance (1 in 19 answers) clearly.
#[test]
fn sft_warm_start_beats_chance() {
    let dir = tmp("sft");
    let json = model_config_json();
    let cfg = ModelConfig::from_json(&json).unwrap();
    let mut model = Model::from_weights(cfg.clone(), init_weights(&cfg, 1)).unwrap();
    write_model_dir(&dir, &json, &model.weights, &model.config).unwrap();
    let tok = scalerl::model::tokenizer::TextTokenizer::load(&dir).unwrap();
    let (train, eval) = problems(10, 20, 1);
    let before = accuracy(&model, &tok, &eval, 0.0, 1).unwrap();
    let loss = sft(&mut model, &tok, &train, 300, 16, 3e-3, 1, false).unwrap();
    let after = accuracy(&model, &tok, &eval, 0.0, 1).unwrap();
    eprintln!("sft: accuracy {before:.3} -> {after:.3}, loss {loss:.4}");
    assert!(after >= 0.25, "accuracy after SFT {after} (before {before}, loss {loss})");
    let _ = std::fs::remove_dir_all(&dir);
}
