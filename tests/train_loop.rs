//! The GRPO training loop end to end on the tiny fixture model (CPU backend): a run writes one
//! metrics record per step and its checkpoints and changes the weights; `[[stage]]`s switch the
//! budget and group size at their step; a run interrupted and resumed is bit-identical to an
//! uninterrupted one; a bad config is refused before any work; `[auto_stage]` switches early
//! when responses are cut; `[validation]` runs at start and every K steps; a non-finite loss
//! or gradient skips the update and leaves the weights untouched.
use scalerl::model::Model;
use scalerl::train::checkpoint;
use scalerl::train::config::{RefPlacement, RunConfig};
use scalerl::train::metrics::{read_metrics, StepMetrics};
use scalerl::train::trainer::{train, TrainOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalerl-train-loop-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The tiny run: 2 prompts per step, stage 0 (budget 4, n 2) then stage 1 from step 2 (budget 8, n 4).
fn config_text(run_dir: &Path, total_steps: usize, extra_top: &str) -> String {
    config_text_with_stages(run_dir, total_steps, extra_top, STAGES)
}

const STAGES: &str = "
[[stage]]
from_step = 0
max_response_len = 4
n = 2

[[stage]]
from_step = 2
max_response_len = 8
n = 4
";

fn config_text_with_stages(run_dir: &Path, total_steps: usize, extra_top: &str, stages: &str) -> String {
    format!(
        r#"
model = "tests/fixtures/tiny-qwen2"
run_dir = "{}"
seed = 7
total_steps = {total_steps}
{extra_top}

[data]
train = ["tests/fixtures/train/small.json"]
prompt_template = "{{problem}}"
chat_template = "r1-distill"
max_prompt_len = 200

[rollout]
batch_prompts = 2
temperature = 1.0

[optim]
lr = 1e-3
mini_batch_prompts = 1

[checkpoint]
every = 2
keep_last = 2
dtype = "f32"
{stages}"#,
        run_dir.display()
    )
}

fn config(run_dir: &Path, total_steps: usize) -> RunConfig {
    RunConfig::from_toml_str(&config_text(run_dir, total_steps, "")).unwrap()
}

fn weights_of(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let m = Model::load(dir).unwrap();
    m.weights.iter().map(|(e, p)| (e.name.clone(), p.to_vec())).collect()
}

/// A record without its timing and memory fields (wall-clock varies between runs; interpret
/// devices of tests running side by side share one memory count).
fn untimed(m: &StepMetrics) -> StepMetrics {
    let mut m = m.clone();
    m.peak_memory = None;
    for p in [
        &mut m.rollout,
        &mut m.verify,
        &mut m.logprobs,
        &mut m.update,
    ] {
        p.secs = 0.0;
        p.tokens_per_s = 0.0;
    }
    m.step_secs = 0.0;
    m
}

#[test]
fn run_writes_metrics_checkpoints_and_changes_weights() {
    let dir = tmp("basic");
    let s = train(&config(&dir, 4), &TrainOptions::default()).unwrap();
    assert_eq!((s.steps, s.steps_run), (4, 4));
    let (recs, truncated) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert!(!truncated);
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    for r in &recs {
        let mut v = vec![
            r.reward_mean,
            r.accuracy,
            r.response_len.all,
            r.clip_ratio,
            r.pg_loss,
            r.kl,
            r.entropy,
            r.clip_frac,
            r.approx_kl,
            r.grad_norm,
            r.lr,
            r.step_secs,
        ];
        v.extend(r.response_len.correct);
        v.extend(r.response_len.incorrect);
        for p in [r.rollout, r.verify, r.logprobs, r.update] {
            v.extend([p.secs, p.tokens_per_s]);
        }
        assert!(
            v.iter().all(|x| x.is_finite()),
            "step {}: non-finite field in {r:?}",
            r.step
        );
        assert_eq!(r.skipped_updates, 0);
        assert!(r.grad_norm > 0.0 && r.entropy > 0.0 && r.lr > 0.0, "{r:?}");
        assert!(r.rollout.tokens > 0 && r.update.tokens > 0);
        assert!(r.response_len.all >= 1.0 && r.response_len.all <= r.max_response_len as f64);
    }
    // Checkpoints every 2 steps, newest 2 kept, `latest` names the last.
    let ckpts: Vec<usize> = checkpoint::list(&dir)
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(ckpts, vec![2, 4]);
    assert_eq!(
        checkpoint::latest(&dir).unwrap().unwrap(),
        dir.join("step-4")
    );
    let loaded = checkpoint::load(&dir.join("step-4")).unwrap();
    assert_eq!(loaded.state.step, 4);
    assert_eq!(loaded.state.clip_history.len(), 4);
    assert!(loaded.optimizer.is_some());
    // The weights moved.
    let before = weights_of(Path::new("tests/fixtures/tiny-qwen2"));
    let after = weights_of(&dir.join("step-4"));
    let changed = before
        .iter()
        .zip(&after)
        .filter(|(a, b)| a.1 != b.1)
        .count();
    assert!(
        changed == before.len(),
        "only {changed} of {} tensors changed",
        before.len()
    );
    // A second fresh run into the same directory is refused.
    let e = train(&config(&dir, 4), &TrainOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("--resume"), "{e:#}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stages_switch_budget_and_group_size() {
    let dir = tmp("stages");
    train(&config(&dir, 4), &TrainOptions::default()).unwrap();
    let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let got: Vec<(usize, usize, usize)> = recs
        .iter()
        .map(|r| (r.stage, r.max_response_len, r.n))
        .collect();
    assert_eq!(got, vec![(0, 4, 2), (0, 4, 2), (1, 8, 4), (1, 8, 4)]);
    // 2 prompts × n samples were generated each step, each within its stage's budget.
    for r in &recs {
        assert!(r.rollout.tokens as usize <= 2 * r.n * r.max_response_len);
        assert!(r.rollout.tokens as usize >= 2 * r.n);
    }
    assert!(recs[2].rollout.tokens > recs[1].rollout.tokens);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_is_bit_exact() {
    let straight = tmp("straight");
    train(&config(&straight, 4), &TrainOptions::default()).unwrap();

    let split = tmp("split");
    let first = train(&config(&split, 2), &TrainOptions::default()).unwrap();
    assert_eq!(first.steps, 2);
    // The resumed run gets the 4-step config; its own run_dir key is ignored for --resume.
    let s = train(
        &config(Path::new("/nonexistent/ignored"), 4),
        &TrainOptions {
            resume: Some(split.clone()),
            progress: false,
            device: None,
        },
    )
    .unwrap();
    assert_eq!((s.steps, s.steps_run), (4, 2));

    let a = weights_of(&straight.join("step-4"));
    let b = weights_of(&split.join("step-4"));
    assert_eq!(a.len(), b.len());
    for ((na, wa), (nb, wb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            wa.iter().zip(wb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "tensor {na} differs after resume"
        );
    }
    let (ra, _) = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    let (rb, _) = read_metrics(&split.join("metrics.jsonl")).unwrap();
    assert_eq!(rb.len(), 4);
    let ua: Vec<StepMetrics> = ra.iter().map(untimed).collect();
    let ub: Vec<StepMetrics> = rb.iter().map(untimed).collect();
    assert_eq!(ua, ub);
    let sa = checkpoint::load(&straight.join("step-4")).unwrap().state;
    let sb = checkpoint::load(&split.join("step-4")).unwrap().state;
    assert_eq!(sa, sb);

    // Resuming a directory without a checkpoint is a clear error.
    let empty = tmp("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = train(
        &config(&empty, 4),
        &TrainOptions {
            resume: Some(empty.clone()),
            progress: false,
            device: None,
        },
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("no checkpoint"), "{e:#}");
    for d in [straight, split, empty] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn bad_config_key_is_named_and_nothing_is_written() {
    let dir = tmp("badkey");
    let cfg_path = std::env::temp_dir().join(format!(
        "scalerl-train-loop-{}-bad.toml",
        std::process::id()
    ));
    std::fs::write(&cfg_path, config_text(&dir, 2, "learning_rat = 0.1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("learning_rat"), "{err}");
    assert!(err.contains(&cfg_path.display().to_string()), "{err}");
    assert!(!dir.exists(), "the run dir was created for a bad config");

    // A bad data file is refused before the run dir is made, too.
    let bad_data = config_text(&dir, 2, "").replace(
        "tests/fixtures/train/small.json",
        "tests/fixtures/train/bad_line.jsonl",
    );
    std::fs::write(&cfg_path, bad_data).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_line.jsonl"), "{err}");
    assert!(!dir.exists());
    let _ = std::fs::remove_file(&cfg_path);
}

#[test]
fn cli_trains_the_tiny_config() {
    let dir = tmp("cli");
    let cfg_path = std::env::temp_dir().join(format!(
        "scalerl-train-loop-{}-cli.toml",
        std::process::id()
    ));
    std::fs::write(&cfg_path, config_text(&dir, 2, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("step 1/2") && err.contains("step 2/2") && err.contains("per step: rollout") && err.contains("charts: "),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--quiet", "--config"])
        .arg(&cfg_path)
        .arg("--resume")
        .arg(&dir)
        .output()
        .unwrap();
    // Already at total_steps: nothing to do, still a success.
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(read_metrics(&dir.join("metrics.jsonl")).unwrap().0.len(), 2);
    let _ = std::fs::remove_file(&cfg_path);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn long_prompts_are_dropped_and_counted() {
    let dir = tmp("drop");
    let text = config_text(&dir, 1, "").replace("max_prompt_len = 200", "max_prompt_len = 20");
    let s = train(
        &RunConfig::from_toml_str(&text).unwrap(),
        &TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(s.prompts_dropped, 2);
    let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(recs[0].prompts_dropped, 2);
    let _ = std::fs::remove_dir_all(&dir);

    // Nothing fits: an error before the run dir exists.
    let text = config_text(&dir, 1, "").replace("max_prompt_len = 200", "max_prompt_len = 1");
    let e = train(
        &RunConfig::from_toml_str(&text).unwrap(),
        &TrainOptions::default(),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("no prompt fits"), "{e:#}");
    assert!(!dir.exists());
}

#[test]
fn micro_batches_give_the_same_update() {
    // By sequences, and by a token budget that packs them first-fit.
    for (name, key) in [("seqs", "micro_batch_seqs = 1"), ("tokens", "micro_batch_tokens = 40")] {
        micro_batches_give_the_same_update_with(name, key);
    }
}

fn micro_batches_give_the_same_update_with(name: &str, key: &str) {
    let whole = tmp(&format!("whole-{name}"));
    let micro = tmp(&format!("micro-{name}"));
    train(&config(&whole, 4), &TrainOptions::default()).unwrap();
    let text = config_text(&micro, 4, "").replace("mini_batch_prompts = 1", &format!("mini_batch_prompts = 1\n{key}"));
    train(
        &RunConfig::from_toml_str(&text).unwrap(),
        &TrainOptions::default(),
    )
    .unwrap();
    let (a, b) = (
        weights_of(&whole.join("step-4")),
        weights_of(&micro.join("step-4")),
    );
    let before = weights_of(Path::new("tests/fixtures/tiny-qwen2"));
    for (((name, wa), (_, wb)), (_, w0)) in a.iter().zip(&b).zip(&before) {
        // Compare the updates (not the weights), relative to the update's size.
        let da: Vec<f64> = wa.iter().zip(w0).map(|(x, y)| (*x - *y) as f64).collect();
        let db: Vec<f64> = wb.iter().zip(w0).map(|(x, y)| (*x - *y) as f64).collect();
        let norm = da.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff = da
            .iter()
            .zip(&db)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            diff <= 1e-3 * norm + 1e-9,
            "{name}: update differs by {diff} (norm {norm})"
        );
    }
    let (ra, _) = read_metrics(&whole.join("metrics.jsonl")).unwrap();
    let (rb, _) = read_metrics(&micro.join("metrics.jsonl")).unwrap();
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(x.rollout.tokens, y.rollout.tokens);
        for (p, q) in [
            (x.pg_loss, y.pg_loss),
            (x.kl, y.kl),
            (x.entropy, y.entropy),
            (x.grad_norm, y.grad_norm),
        ] {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                "step {}: {p} vs {q}",
                x.step
            );
        }
    }
    for d in [whole, micro] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Stage 1 is scheduled far away (step 50); only `[auto_stage]` can start it. With a budget of
/// 2 tokens the random tiny model is cut on (nearly) every response, so the clip ratio of steps
/// 0 and 1 exceeds the threshold and stage 1 begins at step 2.
const AUTO_STAGES: &str = "
[auto_stage]
clip_ratio_threshold = 0.5
window = 2

[[stage]]
from_step = 0
max_response_len = 2
n = 2

[[stage]]
from_step = 50
max_response_len = 6
n = 3
";

#[test]
fn auto_stage_switches_when_responses_are_cut_and_resumes_there() {
    let straight = tmp("auto");
    let cfg = |dir: &Path, steps| RunConfig::from_toml_str(&config_text_with_stages(dir, steps, "", AUTO_STAGES)).unwrap();
    train(&cfg(&straight, 4), &TrainOptions::default()).unwrap();
    let (recs, _) = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    assert!(recs[0].clip_ratio > 0.5 && recs[1].clip_ratio > 0.5, "precondition: budget-2 responses are cut: {recs:?}");
    let got: Vec<(usize, usize, usize)> = recs.iter().map(|r| (r.stage, r.max_response_len, r.n)).collect();
    assert_eq!(got, vec![(0, 2, 2), (0, 2, 2), (1, 6, 3), (1, 6, 3)]);

    // Resumed from the step-2 checkpoint, the clip history comes back and stage 1 continues.
    let split = tmp("auto-split");
    train(&cfg(&split, 2), &TrainOptions::default()).unwrap();
    train(&cfg(Path::new("/nonexistent"), 4), &TrainOptions { resume: Some(split.clone()), progress: false, device: None }).unwrap();
    let (rb, _) = read_metrics(&split.join("metrics.jsonl")).unwrap();
    assert_eq!(recs.iter().map(untimed).collect::<Vec<_>>(), rb.iter().map(untimed).collect::<Vec<_>>());
    for d in [straight, split] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

const VALIDATION: &str = r#"
[validation]
every = 2
at_start = true
benchmarks = ["tests/fixtures/eval/math.json", "tests/fixtures/eval/amc.json"]
n = 2
max_problems = 2
max_response_len = 3
temperature = 1.0
"#;

#[test]
fn validation_runs_at_start_and_every_k_steps() {
    let dir = tmp("validation");
    let cfg = |dir: &Path, steps| RunConfig::from_toml_str(&config_text(dir, steps, VALIDATION)).unwrap();
    train(&cfg(&dir, 4), &TrainOptions::default()).unwrap();
    let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let when: Vec<Vec<(String, usize)>> =
        recs.iter().map(|r| r.validation.iter().map(|v| (v.benchmark.clone(), v.after_steps)).collect()).collect();
    let both = |k: usize| vec![("math".to_string(), k), ("amc".to_string(), k)];
    assert_eq!(when, vec![both(0), both(2), vec![], both(4)]);
    for v in recs.iter().flat_map(|r| &r.validation) {
        assert_eq!(v.n, 2);
        assert!((0.0..=1.0).contains(&v.pass_at_1) && (0.0..=1.0).contains(&v.clip_ratio), "{v:?}");
        assert!(v.response_len_mean >= 1.0 && v.response_len_mean <= 3.0, "{v:?}");
    }
    // Samples are seeded per (seed, benchmark, problem, sample): a resumed run validates the
    // same weights to the same numbers.
    let split = tmp("validation-split");
    train(&cfg(&split, 2), &TrainOptions::default()).unwrap();
    train(&cfg(Path::new("/nonexistent"), 4), &TrainOptions { resume: Some(split.clone()), progress: false, device: None }).unwrap();
    let (rb, _) = read_metrics(&split.join("metrics.jsonl")).unwrap();
    let strip = |r: &StepMetrics| -> Vec<(String, usize, u64, u64, u64)> {
        r.validation
            .iter()
            .map(|v| (v.benchmark.clone(), v.after_steps, v.pass_at_1.to_bits(), v.response_len_mean.to_bits(), v.clip_ratio.to_bits()))
            .collect()
    };
    assert_eq!(recs.iter().map(strip).collect::<Vec<_>>(), rb.iter().map(strip).collect::<Vec<_>>());

    // A missing benchmark file is refused before any work.
    let bad = tmp("validation-bad");
    let text = config_text(&bad, 2, &VALIDATION.replace("amc.json", "nope.json"));
    let e = train(&RunConfig::from_toml_str(&text).unwrap(), &TrainOptions::default()).unwrap_err();
    assert!(format!("{e:#}").contains("nope.json"), "{e:#}");
    assert!(!bad.exists());
    // So is a benchmark prompt that cannot fit the model's context (256 tokens), which used to
    // surface only at the first validation.
    let long = std::env::temp_dir().join(format!("scalerl-long-{}.json", std::process::id()));
    std::fs::write(&long, format!(r#"[{{"problem": "{}", "answer": "2"}}]"#, "1 + 1 = ? ".repeat(200))).unwrap();
    let text = config_text(&bad, 2, &VALIDATION.replace("tests/fixtures/eval/amc.json", long.to_str().unwrap()));
    let e = format!("{:#}", train(&RunConfig::from_toml_str(&text).unwrap(), &TrainOptions::default()).unwrap_err());
    assert!(e.contains("validation") && e.contains("leaves no room"), "{e}");
    assert!(!bad.exists());
    let _ = std::fs::remove_file(&long);
    for d in [dir, split] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

#[test]
fn a_non_finite_loss_or_gradient_skips_the_update() {
    use scalerl::train::update::{apply_update, ppo_updates, UpdateBatch, UpdatePlan};
    use scalerl::ops::cpu::CpuOps;
    use scalerl::params::HostParams;
    use scalerl::train::{PassOptions, Policy, Sample};
    let cfg = config(Path::new("/unused"), 1);
    let base = Model::load(Path::new("tests/fixtures/tiny-qwen2")).unwrap();
    let mut policy = Policy::new(CpuOps, base.config.clone(), &base.weights, cfg.adamw(), None).unwrap();
    let before: Vec<f32> = base.weights.flat().to_vec();
    let unchanged = |m: &Model| m.weights.flat().iter().zip(&before).all(|(x, y)| x.to_bits() == y.to_bits());

    // Two prompts × two samples; one advantage is NaN, so the loss of its mini-batch is NaN.
    let seqs: Vec<Vec<u32>> = (0..4u32).map(|i| vec![5, 6 + i, 7, 8 + i, 9]).collect();
    let samples: Vec<Sample> = seqs.iter().map(|s| Sample { tokens: s, prompt_len: 2 }).collect();
    let old: Vec<Vec<f32>> = vec![vec![-5.0; 3]; 4];
    let stage = cfg.stages()[0];
    let grpo = cfg.grpo(&stage);
    let pass = PassOptions::default();
    let plan = UpdatePlan { seed: 1, step: 0, ppo_epochs: 1, mini_batch_prompts: 2, micro: scalerl::train::update::MicroBatch::Whole, grpo: &grpo, pass: &pass };
    let adv = [1.0, f32::NAN, -1.0, 0.5];
    let b = UpdateBatch { samples: &samples, n: 2, advantages: &adv, old_logp: &old, ref_logp: Some(&old) };
    let s = ppo_updates(&mut policy, &b, &plan).unwrap();
    assert_eq!((s.updates, s.skipped), (0, 1));
    assert!(unchanged(&policy.model), "a NaN loss changed the weights");
    assert_eq!((policy.optim.steps, policy.optim.updates), (1, 0), "the schedule advances, the moments do not");

    // A finite loss with an infinite gradient is skipped too.
    let mut grads = HostParams::zeros(base.table());
    grads.flat_mut()[0] = f32::INFINITY;
    let r = apply_update(&mut policy, &mut grads, 1.0).unwrap();
    assert!(r.skipped && unchanged(&policy.model));
    assert_eq!((policy.optim.steps, policy.optim.updates), (2, 0));

    // The same batch with finite advantages updates the weights.
    let adv = [1.0, -1.0, -1.0, 0.5];
    let b = UpdateBatch { advantages: &adv, ..b };
    let s = ppo_updates(&mut policy, &b, &plan).unwrap();
    assert_eq!((s.updates, s.skipped), (1, 0));
    assert!(!unchanged(&policy.model) && s.grad_norm.is_finite() && s.grad_norm > 0.0);
}

/// Width and height from a PNG's IHDR chunk (after the 8-byte signature and the chunk header).
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn plot_writes_the_charts_with_stage_switches() {
    let dir = tmp("plot");
    train(&RunConfig::from_toml_str(&config_text(&dir, 4, VALIDATION)).unwrap(), &TrainOptions::default()).unwrap();
    let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    let switches = scalerl::train::plot::stage_switches(&recs);
    assert_eq!(switches.len(), 1);
    assert_eq!(switches[0].0, 2.0);
    assert!(switches[0].1.contains("8 tokens"), "{switches:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).arg("plot").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&out.stdout);
    for name in ["reward.png", "response_length.png", "clip_ratio.png", "validation.png"] {
        let p = dir.join("plots").join(name);
        assert!(listed.contains(&p.display().to_string()), "{listed}");
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(png_size(&bytes), (960, 540), "{name}");
        // A drawn chart (text, lines) compresses far worse than a blank canvas (~2 KB).
        assert!(bytes.len() > 20_000, "{name}: {} bytes", bytes.len());
    }

    // Not a run directory: a clear error naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_scalerl")).args(["plot", "tests/fixtures"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tests/fixtures") && err.contains("metrics.jsonl"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` mid-checkpoint (as soon as a `.tmp-step-N` directory appears) and mid-step (as
/// soon as a new metrics line lands, before its checkpoint), then `--resume`: every kill
/// leaves a loadable latest checkpoint, and the resumed run ends bit-identical to an
/// uninterrupted one.
#[test]
fn killed_mid_checkpoint_or_mid_step_and_resumed_gives_the_same_run() {
    let steps = 10;
    let cfg_for = |dir: &Path, name: &str| {
        let text = config_text(dir, steps, "").replace("every = 2\nkeep_last = 2", "every = 1\nkeep_last = 2");
        let p = std::env::temp_dir().join(format!("scalerl-train-loop-{}-{name}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    };
    let straight = tmp("kill-straight");
    let status = Command::new(env!("CARGO_BIN_EXE_scalerl"))
        .args(["train", "--quiet", "--config"])
        .arg(cfg_for(&straight, "kill-straight"))
        .status()
        .unwrap();
    assert!(status.success());

    let killed = tmp("kill");
    let cfg = cfg_for(&killed, "kill");
    let lines = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).map_or(0, |t| t.matches('\n').count());
    let saving = |d: &Path| {
        std::fs::read_dir(d).into_iter().flatten().flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-step-"))
    };
    let spawn = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_scalerl"));
        cmd.args(["train", "--quiet", "--config"]).arg(&cfg);
        if checkpoint::latest(&killed).unwrap().is_some() {
            cmd.arg("--resume").arg(&killed);
        }
        cmd.stderr(std::process::Stdio::null()).spawn().unwrap()
    };
    let (mut mid_save, mut mid_step, mut torn) = (0, 0, 0);
    for round in 0..8 {
        let before = lines(&killed);
        let mut child = spawn();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let hit = if round % 2 == 0 { saving(&killed) } else { lines(&killed) > before };
            if hit {
                child.kill().unwrap(); // SIGKILL: no destructor, no flush
                if round % 2 == 0 { mid_save += 1 } else { mid_step += 1 }
                break;
            }
        }
        child.wait().unwrap();
        // A temp dir left behind: the kill tore a checkpoint write.
        torn += usize::from(saving(&killed));
        // Whatever was cut, the newest checkpoint is complete and loadable.
        if let Some(l) = checkpoint::load_latest(&killed).unwrap() {
            assert!(l.state.step >= 1 && l.state.step <= steps);
            assert_eq!(l.state.clip_history.len(), l.state.step);
        }
    }
    assert!(spawn().wait().unwrap().success());
    eprintln!("killed {mid_save} times mid-checkpoint ({torn} writes torn), {mid_step} times mid-step");
    assert!(mid_save >= 3 && mid_step >= 3 && torn >= 1, "{mid_save} mid-checkpoint ({torn} torn) and {mid_step} mid-step kills");

    let (a, b) = (weights_of(&straight.join("step-10")), weights_of(&killed.join("step-10")));
    for ((name, wa), (_, wb)) in a.iter().zip(&b) {
        assert!(wa.iter().zip(wb).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs after kills");
    }
    let (ra, _) = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    let (rb, _) = read_metrics(&killed.join("metrics.jsonl")).unwrap();
    assert_eq!(ra.iter().map(untimed).collect::<Vec<_>>(), rb.iter().map(untimed).collect::<Vec<_>>());
    for d in [straight, killed] {
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// `device = "interpret"`: the whole step — rollouts, validation, log-probs, the backward and
/// AdamW on the f32 master copy — runs on the CUDA backend (its kernels on the CPU here), on the
/// head_dim-64 fixture (the packed-attention kernels serve 64 and 128). Without a GPU, `cuda` is
/// refused before any work, naming the key; the old `rollout.device` key says where it went.
#[test]
fn the_whole_step_runs_on_the_cuda_backend() {
    let dir = tmp("device-interpret");
    let text = config_text(&dir, 2, &format!("device = \"interpret\"\n{VALIDATION}")).replace("tests/fixtures/tiny-qwen2\"", "tests/fixtures/tiny-qwen2-d64\"");
    assert!(text.contains("tiny-qwen2-d64"));
    train(&RunConfig::from_toml_str(&text).unwrap(), &TrainOptions::default()).unwrap();
    let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
    assert_eq!(recs.len(), 2);
    for r in &recs {
        assert!(r.rollout.tokens as usize >= 2 * r.n && r.rollout.tokens as usize <= 2 * r.n * r.max_response_len, "{r:?}");
        assert!(r.grad_norm.is_finite() && r.grad_norm > 0.0 && r.skipped_updates == 0, "{r:?}");
        // The sampler's log-probs (decode kernels) against the trainer's recomputation (packed
        // attention, fused log-prob): both bf16, so close but not equal.
        assert!(r.logprob_gap.max.is_finite() && r.logprob_gap.max < 0.5 && r.logprob_gap.mean > 0.0, "{:?}", r.logprob_gap);
    }
    assert_eq!(recs.iter().map(|r| r.validation.len()).collect::<Vec<_>>(), vec![2, 2]);
    // The checkpoint holds the f32 master weights, and they moved.
    let (after, before) = (weights_of(&dir.join("step-2")), weights_of(Path::new("tests/fixtures/tiny-qwen2-d64")));
    // Peak memory per phase is measured: at least the bf16 weights and the f32 master in every
    // phase, plus the f32 gradients and both AdamW moments in the update (lower bounds only:
    // interpret devices of tests running beside this one share the count).
    let params: usize = before.iter().map(|(_, w)| w.len()).sum();
    for r in &recs {
        let m = r.peak_memory.expect("a device run logs its peak memory");
        assert!(m.rollout >= 6 * params && m.logprobs >= 6 * params, "{m:?} for {params} parameters");
        assert!(m.update >= (2 + 4 * 4) * params, "{m:?} for {params} parameters");
    }
    assert!(after.iter().zip(&before).any(|((_, a), (_, b))| a != b));
    let _ = std::fs::remove_dir_all(&dir);

    if !scalerl::device::cuda::driver_present() {
        let bad = tmp("device-cuda");
        let text = config_text(&bad, 1, "device = \"cuda\"");
        let e = format!("{:#}", train(&RunConfig::from_toml_str(&text).unwrap(), &TrainOptions::default()).unwrap_err());
        assert!(e.contains("device") && e.contains("no GPU"), "{e}");
        assert!(!bad.exists());
    }
    let e = RunConfig::from_toml_str(&config_text(&dir, 1, "device = \"tpu\"")).unwrap_err();
    assert!(format!("{e:#}").contains("device: unknown device `tpu`"), "{e:#}");
    let moved = config_text(&dir, 1, "").replace("temperature = 1.0\n\n[optim]", "temperature = 1.0\ndevice = \"cpu\"\n\n[optim]");
    let e = RunConfig::from_toml_str(&moved).unwrap_err();
    assert!(format!("{e:#}").contains("rollout.device is now the top-level `device` key"), "{e:#}");
}

/// `loss.reference = "host"` (the reference uploaded for each log-prob pass) trains exactly like
/// the resident reference: the same records, KL included, and the same weights.
#[test]
fn a_host_reference_trains_like_a_resident_one() {
    let mut runs = Vec::new();
    for placement in [RefPlacement::Device, RefPlacement::Host] {
        let dir = tmp(&format!("reference-{placement}"));
        let mut cfg = config(&dir, 3);
        cfg.loss.reference = placement;
        assert!(cfg.loss.use_kl);
        train(&cfg, &TrainOptions::default()).unwrap();
        let (recs, _) = read_metrics(&dir.join("metrics.jsonl")).unwrap();
        runs.push((recs.iter().map(untimed).collect::<Vec<_>>(), weights_of(&dir.join("step-2"))));
        let _ = std::fs::remove_dir_all(&dir);
    }
    // After the first update the policy has left the reference: the KL term is live.
    assert!(runs[0].0.iter().skip(1).any(|r| r.kl > 0.0), "{:?}", runs[0].0);
    assert!(runs[0] == runs[1], "a host reference changed the run");
}
