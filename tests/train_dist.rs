//! Data-parallel GRPO without GPUs: ranks as threads joined by `ThreadGroup` (NCCL's semantics),
//! each running the trainer on its share of every step's prompt groups (CPU backend, tiny
//! fixture). Two ranks must give one rank's run — the same samples and rewards, the same stage
//! decisions, and weights equal up to the order of the gradient sums (on the CPU and on the
//! interpret device); two ranks resumed after a checkpoint continue exactly; and a rank that stops
//! early must stop the other with an error naming it, leaving the last checkpoint intact.
use scalerl::dist::ThreadGroup;
use scalerl::model::Model;
use scalerl::train::checkpoint;
use scalerl::train::config::RunConfig;
use scalerl::train::metrics::{read_metrics, StepMetrics};
use scalerl::train::trainer::{train, train_rank, TrainOptions, TrainSummary};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalerl-train-dist-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// 4 prompts a step in mini-batches of 2 (shuffled, so a mini-batch may lie on one rank and the
/// other contributes nothing to it), stage 1 from step 2 (budget 8, n 4).
fn config(run_dir: &Path, total_steps: usize, every: usize) -> RunConfig {
    config_on(run_dir, total_steps, every, "tiny-qwen2", "cpu")
}

fn config_on(run_dir: &Path, total_steps: usize, every: usize, model: &str, device: &str) -> RunConfig {
    RunConfig::from_toml_str(&format!(
        r#"
model = "tests/fixtures/{model}"
run_dir = "{}"
seed = 11
total_steps = {total_steps}
device = "{device}"

[data]
train = ["tests/fixtures/train/small.json"]
prompt_template = "{{problem}}"
chat_template = "r1-distill"
max_prompt_len = 200

[rollout]
batch_prompts = 4
temperature = 1.0

[optim]
lr = 1e-3
mini_batch_prompts = 2

[checkpoint]
every = {every}
keep_last = 3
dtype = "f32"

[[stage]]
from_step = 0
max_response_len = 4
n = 2

[[stage]]
from_step = 2
max_response_len = 8
n = 4
"#,
        run_dir.display()
    ))
    .unwrap()
}

/// Runs `cfgs[r]` as rank r of one group, each on its own thread.
fn ranks(cfgs: Vec<RunConfig>, timeout: Duration) -> Vec<anyhow::Result<TrainSummary>> {
    ranks_with(cfgs, timeout, TrainOptions::default())
}

fn ranks_with(cfgs: Vec<RunConfig>, timeout: Duration, opts: TrainOptions) -> Vec<anyhow::Result<TrainSummary>> {
    let groups = ThreadGroup::new(cfgs.len(), timeout);
    let threads: Vec<_> = cfgs
        .into_iter()
        .zip(groups)
        .map(|(cfg, mut g)| {
            let opts = opts.clone();
            std::thread::spawn(move || train_rank(&cfg, &opts, &mut g))
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn weights_of(dir: &Path) -> Vec<f32> {
    Model::load(dir).unwrap().weights.into_flat()
}

#[test]
fn two_ranks_on_half_the_groups_train_like_one_rank_on_all() {
    let one = tmp("one");
    train(&config(&one, 3, 3), &TrainOptions::default()).unwrap();
    let (a, _) = read_metrics(&one.join("metrics.jsonl")).unwrap();
    assert_eq!(a.len(), 3);
    let wa = weights_of(&one.join("step-3"));
    let start = Model::load(Path::new("tests/fixtures/tiny-qwen2")).unwrap().weights.into_flat();
    let moved = wa.iter().zip(&start).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    assert!(moved > 1e-3, "the run trains (max move {moved})");
    // Two ranks (2 prompts each), and three (1, 1 and 2 prompts: uneven shares).
    for world in [2, 3] {
        let many = tmp(&format!("ranks-{world}"));
        for r in ranks(vec![config(&many, 3, 3); world], Duration::from_secs(120)) {
            assert_eq!(r.unwrap().steps, 3);
        }
        // The samples are seeded by their place in the whole batch, so rewards, lengths and the
        // clip ratio (which drives stage switches) are the one rank's exactly.
        let (b, _) = read_metrics(&many.join("metrics.jsonl")).unwrap();
        assert_eq!(b.len(), 3, "rank 0 alone writes the metrics, once a step");
        let facts = |m: &StepMetrics| (m.stage, m.n, m.reward_mean, m.accuracy, m.response_len, m.clip_ratio, m.zero_variance_groups);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(facts(x), facts(y), "{world} ranks, step {}", x.step);
            // Losses and norms: the same sums in another order.
            for (what, p, q) in [("pg_loss", x.pg_loss, y.pg_loss), ("kl", x.kl, y.kl), ("entropy", x.entropy, y.entropy), ("grad_norm", x.grad_norm, y.grad_norm)] {
                let rel = (p - q).abs() / p.abs().max(1e-12);
                assert!(rel <= 1e-5, "{world} ranks, step {} {what}: one rank {p}, {world} ranks {q} (rel {rel:e})", x.step);
            }
        }
        // Weights: AdamW moves each by up to lr = 1e-3 a step; summing the gradient in another
        // order (the ranks' parts in f64, against one rank's f32 accumulation) moves them far
        // less: 7.2e-7 (2 ranks) and 1.4e-6 (3 ranks) measured after 3 steps, against a tolerance
        // of 5e-6 (0.5% of one step's move; a wrong normalisation moves the KL by 100%).
        let wb = weights_of(&many.join("step-3"));
        let mut worst = 0.0f32;
        for (x, y) in wa.iter().zip(&wb) {
            let d = (x - y).abs();
            assert!(d <= 5e-6, "{world} ranks: a weight differs by {d}: one rank {x}, {world} ranks {y}");
            worst = worst.max(d);
        }
        eprintln!("{world} ranks vs one after 3 steps: max weight difference {worst:e} (max move from the start {moved:e})");
        let _ = std::fs::remove_dir_all(many);
    }
    let _ = std::fs::remove_dir_all(one);
}

/// The same on the CUDA backend in interpret mode (the head_dim-64 fixture; the gradient set is
/// reduced through `Ops::all_reduce_params_range`, which NCCL does in place on a GPU).
#[test]
fn two_ranks_match_one_on_the_interpret_device() {
    let (one, two) = (tmp("one-interpret"), tmp("two-interpret"));
    let cfg = |d: &Path| config_on(d, 2, 2, "tiny-qwen2-d64", "interpret");
    train(&cfg(&one), &TrainOptions::default()).unwrap();
    for r in ranks(vec![cfg(&two), cfg(&two)], Duration::from_secs(300)) {
        assert_eq!(r.unwrap().steps, 2);
    }
    let (a, _) = read_metrics(&one.join("metrics.jsonl")).unwrap();
    let (b, _) = read_metrics(&two.join("metrics.jsonl")).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.reward_mean, x.response_len, x.clip_ratio), (y.reward_mean, y.response_len, y.clip_ratio), "step {}", x.step);
        let rel = (x.grad_norm - y.grad_norm).abs() / x.grad_norm.abs().max(1e-12);
        assert!(rel <= 1e-4, "step {} grad_norm: one rank {}, two ranks {}", x.step, x.grad_norm, y.grad_norm);
    }
    let (wa, wb) = (weights_of(&one.join("step-2")), weights_of(&two.join("step-2")));
    let worst = wa.iter().zip(&wb).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    let start = Model::load(&Path::new("tests/fixtures").join("tiny-qwen2-d64")).unwrap().weights.into_flat();
    let moved = wa.iter().zip(&start).map(|(x, y)| (x - y).abs()).fold(0.0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    assert!(moved > 1e-4, "the run trains (max move {moved})");
    eprintln!("interpret device, two ranks vs one after 2 steps: max weight difference {worst:e} (max move {moved:e})");
    assert!(worst <= 2e-6, "max weight difference {worst}");
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Two ranks interrupted after step 1 and resumed (same world size) give the uninterrupted
/// two-rank run bit for bit.
#[test]
fn two_ranks_resume_exactly() {
    let (straight, split) = (tmp("straight"), tmp("split"));
    for r in ranks(vec![config(&straight, 3, 1), config(&straight, 3, 1)], Duration::from_secs(120)) {
        r.unwrap();
    }
    for r in ranks(vec![config(&split, 1, 1), config(&split, 1, 1)], Duration::from_secs(120)) {
        r.unwrap();
    }
    let resume = TrainOptions { resume: Some(split.clone()), ..TrainOptions::default() };
    for r in ranks_with(vec![config(&split, 3, 1), config(&split, 3, 1)], Duration::from_secs(120), resume) {
        assert_eq!(r.unwrap().steps_run, 2);
    }
    let (a, b) = (weights_of(&straight.join("step-3")), weights_of(&split.join("step-3")));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "resumed weights differ");
    let (ma, _) = read_metrics(&straight.join("metrics.jsonl")).unwrap();
    let (mb, _) = read_metrics(&split.join("metrics.jsonl")).unwrap();
    assert_eq!(ma.len(), 3);
    assert_eq!(mb.len(), 3);
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!((x.reward_mean, x.pg_loss, x.grad_norm, x.kl), (y.reward_mean, y.pg_loss, y.grad_norm, y.kl), "step {}", x.step);
    }
    for d in [straight, split] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_rank_that_stops_early_stops_the_others_naming_it() {
    let dir = tmp("stop");
    // Rank 1 is configured for one step: it leaves after it, while rank 0 goes on to step 2.
    let out = ranks(vec![config(&dir, 3, 1), config(&dir, 1, 1)], Duration::from_secs(120));
    assert_eq!(out[1].as_ref().unwrap().steps, 1);
    let e = format!("{:#}", out[0].as_ref().unwrap_err());
    assert!(e.contains("rank 1 left the group"), "{e}");
    // The checkpoint written before the failure is whole and loads.
    let c = checkpoint::load_latest(&dir).unwrap().expect("step 1's checkpoint");
    assert_eq!(c.state.step, 1);
    let _ = std::fs::remove_dir_all(dir);
}

/// The gradient is summed in buckets, one per layer, issued in the order the backward finishes
/// them (last layer first, then the embedding and the final norm/lm_head): seen by a collective
/// that records what it is given (rank 0 of 2; the other rank's part is taken to be zero).
#[test]
fn the_gradient_is_reduced_layer_by_layer_as_the_backward_finishes() {
    use scalerl::dist::Collective;
    use scalerl::ops::cpu::CpuOps;
    use scalerl::train::update::{ppo_updates_on, MicroBatch, UpdateBatch, UpdatePlan};
    use scalerl::train::{PassOptions, Policy, Sample};
    struct Recorder(Vec<usize>);
    impl Collective for Recorder {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&mut self, buf: &mut [f32]) -> anyhow::Result<()> {
            self.0.push(buf.len());
            Ok(())
        }
        fn all_reduce_sum_f64(&mut self, _: &mut [f64]) -> anyhow::Result<()> {
            Ok(())
        }
        fn broadcast(&mut self, _: &mut [f32], _: usize) -> anyhow::Result<()> {
            Ok(())
        }
    }
    let cfg = config(Path::new("/unused"), 1, 1);
    let base = Model::load(Path::new("tests/fixtures/tiny-qwen2")).unwrap();
    let table = base.table().clone();
    let mut policy = Policy::new(CpuOps, base.config.clone(), &base.weights, cfg.adamw(), None).unwrap();
    let seqs: Vec<Vec<u32>> = (0..4u32).map(|i| vec![5, 6 + i, 7, 8 + i, 9]).collect();
    let samples: Vec<Sample> = seqs.iter().map(|s| Sample { tokens: s, prompt_len: 2 }).collect();
    let old: Vec<Vec<f32>> = vec![vec![-5.0; 3]; 4];
    let grpo = cfg.grpo(&cfg.stages()[0]);
    let pass = PassOptions::default();
    let adv = [1.0, -1.0, -1.0, 0.5];
    let b = UpdateBatch { samples: &samples, n: 2, advantages: &adv, old_logp: &old, ref_logp: Some(&old) };
    let mut want: Vec<usize> = (0..table.num_layers()).rev().map(|l| table.layer_range(l).len()).collect();
    want.extend(table.global_ranges().iter().map(|r| r.len()));
    assert_eq!(want.iter().sum::<usize>(), table.total(), "the buckets cover the gradient once");
    // Micro-batches of one sequence: the buckets go with the last pass only.
    for micro in [MicroBatch::Whole, MicroBatch::Seqs(1)] {
        let plan = UpdatePlan { seed: 1, step: 0, ppo_epochs: 1, mini_batch_prompts: 2, micro, grpo: &grpo, pass: &pass };
        let mut rec = Recorder(Vec::new());
        ppo_updates_on(&mut policy, &b, &plan, &mut rec).unwrap();
        assert_eq!(rec.0, want, "{micro:?}");
    }
}
