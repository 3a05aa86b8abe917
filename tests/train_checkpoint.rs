//! Checkpoints: the saved directory is a Hugging Face model that `Model::load` reads back
//! bit-exact (F32) or bf16-rounded (BF16), with config/tokenizer files copied; optimizer and
//! trainer state round-trip; saves are atomic (a crash before the rename leaves the previous
//! checkpoint and `latest` intact, and the stray temp dir is cleaned by the next save); only
//! the newest K are kept.
use scalerl::model::Model;
use scalerl::train::checkpoint::{self, OptimizerState, SaveRequest, TrainerState};
use scalerl::train::config::SaveDtype;
use scalerl::train::data::Cursor;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("scalerl-ckpt-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn src(name: &str) -> PathBuf {
    Path::new("tests/fixtures").join(name)
}

/// The fixture model with every weight perturbed (so a save that copied the source would fail).
fn trained(name: &str) -> Model {
    let mut m = Model::load(&src(name)).unwrap();
    let mut s = 0x1234_5678u64;
    for x in m.weights.flat_mut() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *x += ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-2;
    }
    m
}

fn opt_state(m: &Model, steps: usize) -> OptimizerState {
    let moments = m
        .weights
        .iter()
        .enumerate()
        .map(|(i, (e, p))| {
            let mm = p.iter().enumerate().map(|(j, x)| x * 0.5 + (i * 7 + j) as f32 * 1e-3).collect();
            let vv = p.iter().map(|x| x * x + 1e-7).collect();
            (e.name.clone(), mm, vv)
        })
        .collect();
    OptimizerState { steps, updates: steps - 1, moments }
}

fn state(step: usize) -> TrainerState {
    TrainerState {
        step,
        cursor: Cursor { epoch: 1, index: 3 * step },
        stage_index: step % 3,
        seed: 42,
        rng_state: vec![step as u64, 99],
        clip_history: (0..step).map(|s| s as f64 / 100.0).collect(),
        extra: serde_json::json!({"prompts_dropped": 5}),
    }
}

fn save(run: &Path, m: &Model, source: &str, step: usize, dtype: SaveDtype, keep: usize) -> PathBuf {
    let opt = opt_state(m, step);
    let st = state(step);
    let req = SaveRequest { weights: &m.weights, source_model_dir: &src(source), dtype, optimizer: Some(&opt), state: &st };
    checkpoint::save(run, &req, keep).unwrap()
}

fn assert_bits_eq(a: &Model, b: &Model, round_bf16: bool) {
    let (na, nb): (Vec<_>, Vec<_>) = (a.weights.iter().collect(), b.weights.iter().collect());
    assert_eq!(na.iter().map(|(e, _)| &e.name).collect::<Vec<_>>(), nb.iter().map(|(e, _)| &e.name).collect::<Vec<_>>());
    for ((e, x), (_, y)) in na.iter().zip(&nb) {
        let name = &e.name;
        assert_eq!(x.len(), y.len(), "{name}");
        for (i, (&p, &q)) in x.iter().zip(y.iter()).enumerate() {
            let want = if round_bf16 { half::bf16::from_f32(p).to_f32() } else { p };
            assert_eq!(want.to_bits(), q.to_bits(), "{name}[{i}]: {want} vs {q}");
        }
    }
}

#[test]
fn f32_save_loads_bit_exact_with_its_state() {
    let run = tmp("f32");
    let m = trained("tiny-qwen2");
    let dir = save(&run, &m, "tiny-qwen2", 7, SaveDtype::F32, 3);
    assert_eq!(dir, run.join("step-7"));
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap().trim(), "step-7");
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), std::fs::read(src("tiny-qwen2").join(f)).unwrap(), "{f}");
    }
    let back = Model::load(&dir).unwrap();
    assert!(back.table().has_own_lm_head());
    assert_bits_eq(&m, &back, false);
    let loaded = checkpoint::load_latest(&run).unwrap().unwrap();
    assert_eq!(loaded.dir, dir);
    assert_eq!(loaded.state, state(7));
    assert_eq!(loaded.optimizer.unwrap(), opt_state(&m, 7));
    assert_bits_eq(&m, &loaded.model, false);
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn bf16_save_is_bf16_and_rounds_each_weight() {
    let run = tmp("bf16");
    let m = trained("tiny-qwen2");
    let dir = save(&run, &m, "tiny-qwen2", 1, SaveDtype::Bf16, 3);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensors().iter().all(|(_, t)| t.dtype() == safetensors::Dtype::BF16));
    assert_eq!(st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap().shape(), [72, 72]);
    assert_bits_eq(&m, &Model::load(&dir).unwrap(), true);
    // The optimizer state stays f32 (bit-exact) whatever the model dtype.
    assert_eq!(checkpoint::load(&dir).unwrap().optimizer.unwrap(), opt_state(&m, 1));
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn tied_embeddings_write_no_lm_head() {
    let run = tmp("tied");
    let m = trained("tiny-llama");
    assert!(!m.table().has_own_lm_head());
    let dir = save(&run, &m, "tiny-llama", 2, SaveDtype::F32, 3);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert!(st.tensor("lm_head.weight").is_err());
    let back = Model::load(&dir).unwrap();
    assert!(!back.table().has_own_lm_head());
    assert_bits_eq(&m, &back, false);
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn keeps_the_last_k_and_resaving_a_step_replaces_it() {
    let run = tmp("keep");
    let m = trained("tiny-llama");
    for step in 1..=5 {
        save(&run, &m, "tiny-llama", step * 10, SaveDtype::Bf16, 2);
    }
    let steps: Vec<usize> = checkpoint::list(&run).unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(steps, [40, 50]);
    assert_eq!(checkpoint::latest(&run).unwrap().unwrap(), run.join("step-50"));
    // Resuming from step 40 and saving step 50 again replaces the old step-50.
    let opt = opt_state(&m, 50);
    let mut st = state(50);
    st.seed = 7;
    let req = SaveRequest { weights: &m.weights, source_model_dir: &src("tiny-llama"), dtype: SaveDtype::Bf16, optimizer: Some(&opt), state: &st };
    checkpoint::save(&run, &req, 2).unwrap();
    assert_eq!(checkpoint::load_latest(&run).unwrap().unwrap().state.seed, 7);
    assert_eq!(checkpoint::list(&run).unwrap().len(), 2);
    let names: Vec<String> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn a_crash_mid_save_leaves_the_previous_checkpoint() {
    let run = tmp("crash");
    let m = trained("tiny-qwen2");
    save(&run, &m, "tiny-qwen2", 1, SaveDtype::F32, 1);
    let before = std::fs::read(run.join("step-1/model.safetensors")).unwrap();
    // Crash 1: the whole temp dir written, killed before the rename.
    let mut m2 = trained("tiny-qwen2");
    m2.weights.flat_mut()[0] += 1.0;
    let opt = opt_state(&m2, 2);
    let st = state(2);
    let req = SaveRequest { weights: &m2.weights, source_model_dir: &src("tiny-qwen2"), dtype: SaveDtype::F32, optimizer: Some(&opt), state: &st };
    let t = checkpoint::write_temp(&run, &req).unwrap();
    assert_eq!(t, run.join(".tmp-step-2"));
    // Crash 2: a half-written temp dir of another step (no trainer_state.json, truncated weights).
    let partial = run.join(".tmp-step-3");
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), &before[..before.len() / 2]).unwrap();
    assert!(checkpoint::commit(&run, 3, 1).is_err(), "an incomplete temp dir must not be committed");
    // The previous checkpoint and `latest` are intact; temp dirs are invisible.
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap().trim(), "step-1");
    assert_eq!(checkpoint::list(&run).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), [1]);
    let l = checkpoint::load_latest(&run).unwrap().unwrap();
    assert_eq!(l.state.step, 1);
    assert_bits_eq(&m, &l.model, false);
    assert_eq!(std::fs::read(run.join("step-1/model.safetensors")).unwrap(), before);
    // The next save cleans the strays and moves `latest`; keep_last = 1 drops step-1.
    save(&run, &m2, "tiny-qwen2", 4, SaveDtype::F32, 1);
    let mut names: Vec<String> = std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["latest", "step-4"]);
    let l = checkpoint::load_latest(&run).unwrap().unwrap();
    assert_eq!(l.state.step, 4);
    assert_bits_eq(&m2, &l.model, false);
    std::fs::remove_dir_all(&run).unwrap();
}

#[test]
fn a_fresh_run_has_no_checkpoint_and_errors_name_files() {
    let run = tmp("fresh");
    assert!(checkpoint::load_latest(&run).unwrap().is_none());
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("latest"), "step-9\n").unwrap();
    let e = format!("{:#}", checkpoint::latest(&run).unwrap_err());
    assert!(e.contains("step-9") && e.contains("latest"), "{e}");
    let e = format!("{:#}", checkpoint::load(&run.join("step-9")).err().unwrap());
    assert!(e.contains("trainer_state.json"), "{e}");
    std::fs::remove_dir_all(&run).unwrap();
}

// metrics.jsonl lives in the run dir beside the checkpoints; its resume behaviour is tested here.
mod metrics {
    use scalerl::train::metrics::{clip_history, parse_metrics, read_metrics, MetricsLog, PhaseTime, ResponseLens, StepMetrics, ValidationMetrics};

    fn rec(step: usize) -> StepMetrics {
        StepMetrics {
            step,
            stage: 0,
            max_response_len: 8192,
            n: 8,
            reward_mean: 0.25 + step as f64 / 10.0,
            accuracy: 0.25,
            response_len: ResponseLens::from_samples(&[(100, true), (300, false), (500, false)]),
            clip_ratio: step as f64 / 100.0,
            grad_norm: 0.5,
            lr: 1e-6,
            rollout: PhaseTime::new(2.0, 1000),
            ..Default::default()
        }
    }

    #[test]
    fn lines_append_and_a_truncated_tail_is_tolerated_and_cut_on_resume() {
        let dir = super::tmp("metrics");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("metrics.jsonl");
        let mut log = MetricsLog::open(&p).unwrap();
        for s in 0..4 {
            let mut r = rec(s);
            if s == 2 {
                r.validation = vec![ValidationMetrics { benchmark: "aime".into(), after_steps: 0, pass_at_1: 0.3, n: 16, response_len_mean: 9000.0, clip_ratio: 0.1, secs: 60.0 }];
            }
            log.append(&r).unwrap();
        }
        drop(log);
        let (recs, truncated) = read_metrics(&p).unwrap();
        assert!(!truncated);
        assert_eq!(recs, (0..4).map(|s| if s == 2 { recs[2].clone() } else { rec(s) }).collect::<Vec<_>>());
        assert_eq!(recs[2].validation[0].pass_at_1, 0.3);
        assert_eq!(recs[0].response_len, ResponseLens { all: 300.0, correct: Some(100.0), incorrect: Some(400.0) });
        assert_eq!(recs[0].rollout.tokens_per_s, 500.0);
        assert_eq!(clip_history(&recs), [0.0, 0.01, 0.02, 0.03]);
        // A crash mid-write: half a line at the end.
        let full = std::fs::read_to_string(&p).unwrap();
        let line4 = serde_json::to_string(&rec(4)).unwrap();
        std::fs::write(&p, format!("{full}{}", &line4[..line4.len() / 2])).unwrap();
        let (recs, truncated) = read_metrics(&p).unwrap();
        assert!(truncated && recs.len() == 4);
        // Resume at step 3 (the checkpoint had 3 steps done): step 3 and the half line go.
        let mut log = MetricsLog::open_for_resume(&p, 3).unwrap();
        log.append(&rec(3)).unwrap();
        let (recs, truncated) = read_metrics(&p).unwrap();
        assert!(!truncated);
        assert_eq!(recs.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // A complete record without its newline is kept, and the next append starts a new line.
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{text}{line4}")).unwrap();
        let mut log = MetricsLog::open(&p).unwrap();
        log.append(&rec(5)).unwrap();
        assert_eq!(read_metrics(&p).unwrap().0.iter().map(|r| r.step).collect::<Vec<_>>(), [0, 1, 2, 3, 4, 5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_in_the_middle_is_an_error_naming_it() {
        let good = serde_json::to_string(&rec(0)).unwrap();
        let e = parse_metrics(&format!("{good}\n{{\"step\": \n{good}\n")).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        // Only an unterminated last line counts as truncated.
        assert!(parse_metrics(&format!("{good}\n{{\"step\": \n")).is_err());
        assert_eq!(parse_metrics("").unwrap(), (vec![], false));
    }
}

/// AdamW → checkpoint → AdamW: the restored optimizer takes the same next step, bit for bit.
#[test]
fn adamw_state_round_trips_through_a_checkpoint_exactly() {
    use scalerl::ops::cpu::CpuOps;
    use scalerl::params::HostParams;
    use scalerl::train::adamw::{AdamW, AdamWConfig, LrSchedule};
    let cfg = || AdamWConfig { schedule: LrSchedule::constant(1e-3), ..Default::default() };
    let fill = |g: &mut HostParams, k: f32| {
        for (i, (_, v)) in g.iter_mut().enumerate() {
            for (j, x) in v.iter_mut().enumerate() {
                *x = ((i * 31 + j) as f32 * 0.37 + k).sin() * 1e-2;
            }
        }
    };
    let mut m = Model::load(&src("tiny-qwen2")).unwrap();
    let mut opt = AdamW::new(cfg(), &CpuOps, m.table()).unwrap();
    let mut g = HostParams::zeros(m.table());
    for k in 0..2 {
        fill(&mut g, k as f32);
        opt.step(&CpuOps, &mut m.weights, &mut g).unwrap();
    }
    let run = tmp("adamw");
    let st = state(2);
    let exported = opt.export_state(&CpuOps).unwrap();
    let req = SaveRequest { weights: &m.weights, source_model_dir: &src("tiny-qwen2"), dtype: SaveDtype::F32, optimizer: Some(&exported), state: &st };
    let dir = checkpoint::save(&run, &req, 2).unwrap();
    let mut loaded = checkpoint::load(&dir).unwrap();
    let mut restored = AdamW::from_state(cfg(), &CpuOps, loaded.model.table(), loaded.optimizer.take().unwrap()).unwrap();
    fill(&mut g, 2.0);
    let mut g2 = HostParams::zeros(m.table());
    fill(&mut g2, 2.0);
    opt.step(&CpuOps, &mut m.weights, &mut g).unwrap();
    restored.step(&CpuOps, &mut loaded.model.weights, &mut g2).unwrap();
    assert_bits_eq(&m, &loaded.model, false);
    // A state that does not fit the model is refused by name.
    let mut bad = opt.export_state(&CpuOps).unwrap();
    bad.moments[0].0 = "model.not_a_tensor".into();
    let err = AdamW::from_state(cfg(), &CpuOps, m.table(), bad).err().unwrap().to_string();
    assert!(err.contains("model.not_a_tensor"), "{err}");
    let _ = std::fs::remove_dir_all(&run);
}
