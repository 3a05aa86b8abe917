//! The GRPO training loop of `scalerl train` (DeepScaleR / verl's step):
//!
//! 1. the stage of this step (`RunConfig::stage_index_at` with the clip-ratio history);
//! 2. the next `batch_prompts` prompts from the data set (prompts rendered with the config's
//!    template and chat template; prompts over the length limit were dropped at load);
//! 3. rollouts and rewards (`rollout.rs`): `n` samples per prompt at the stage's budget, graded
//!    by the math reward in parallel, a response cut at the budget wrong (or, with
//!    `TrainOptions::replay_rollouts`, the ones another run recorded with `record_rollouts`);
//! 4. group advantages; old log-probs (the policy before the update) and reference log-probs
//!    (the frozen initial model, kept in memory; skipped when the KL term is off);
//! 5. PPO mini-batch updates with AdamW (`update.rs`; a non-finite loss or gradient skips the
//!    update, leaves the weights untouched and is counted);
//! 6. validation every `validation.every` steps and after the last (`validation.rs`; and
//!    before step 0 with `at_start`), logged in the step's record;
//! 7. one `StepMetrics` record appended to `run_dir/metrics.jsonl`, one progress line;
//! 8. a checkpoint every `checkpoint.every` steps and at the end (atomic, newest K kept).
//!
//! Resuming (`TrainOptions::resume`) loads the latest checkpoint (weights, optimizer moments,
//! data cursor, step, clip history) and continues; with `checkpoint.dtype = "f32"` and
//! `save_optimizer = true` the continued run is bit-identical to an uninterrupted one.
//! The whole step runs on `device`: the CPU reference (f32), or the CUDA backend (a GPU, or
//! interpret mode) — rollouts and validation from the bf16 weights the optimizer's cast writes,
//! log-probs through the fused lm_head op, the backward with per-layer recomputation, AdamW on
//! the f32 master copy (`policy.rs`). Grading runs on the host. Each step also logs the gap
//! between the rollout's log-probs and the recomputed old ones (`LogProbGap`).

use super::checkpoint::{self, SaveRequest, TrainerState};
use super::config::{RefPlacement, RunConfig};
use super::data::Dataset;
use super::metrics::{MetricsLog, PhaseTime, ResponseLens, StepMetrics, METRICS_FILE};
use super::rollout::{self, roll_out, Replay, RolloutParams};
use super::step::{response_logprobs, PassOptions};
use super::update::{ppo_updates_on, UpdateBatch, UpdatePlan};
use super::data_parallel::{deal_by_tokens, gather_gap, gather_per_sample, gather_rollouts, RolloutRuns};
use super::step::Sample;
use crate::dist::{Collective, SingleRank};
use super::validation::Validator;
use super::metrics::PhaseMemory;
use super::policy::Policy;
use crate::model::{GenerationConfig, Model, ModelConfig, TextTokenizer, Transformer};
use crate::ops::cpu::CpuOps;
use crate::ops::cuda::CudaOps;
use crate::ops::Ops;
use crate::params::HostParams;
use crate::reward::{Gold, RewardConfig};
use anyhow::{bail, Context, Result};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How `train` runs besides the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue the run in this directory from its latest checkpoint (overrides `run_dir`).
    pub resume: Option<PathBuf>,
    /// Print one line per step (an indicatif bar when stderr is a terminal).
    pub progress: bool,
    /// Run on this device instead of the config's `device`.
    pub device: Option<crate::engine::Backend>,
    /// Append each step's graded rollouts to `RUN_DIR/rollouts.jsonl` (`rollout::record`).
    pub record_rollouts: bool,
    /// Replay the rollouts another run recorded in this run directory instead of sampling
    /// (`rollout::Replay`): two devices fed the same rollouts, their updates compared.
    pub replay_rollouts: Option<PathBuf>,
}

/// What a finished `train` call reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    /// Optimizer steps completed in total (resumed ones included).
    pub steps: usize,
    /// Steps run by this call.
    pub steps_run: usize,
    pub last_checkpoint: Option<PathBuf>,
    pub prompts_dropped: usize,
}

/// A training prompt, tokenized.
/// The frozen reference model of the KL term (`loss.reference`).
enum Reference<O: Ops> {
    /// On the backend for the whole run.
    Resident(Transformer<O>),
    /// f32 on the host; on the backend only during its log-prob pass.
    Host(HostParams),
}

struct Prompt {
    tokens: Vec<u32>,
}

/// Refuses a config without a model or data (before any work).
fn check_supported(cfg: &RunConfig) -> Result<()> {
    if cfg.model.as_os_str().is_empty() {
        bail!("model: no model directory given");
    }
    if cfg.data.train.is_empty() {
        bail!("data.train: no training files given");
    }
    Ok(())
}

fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// Runs (or resumes) a training run on `cfg.device`. Config, data set, model and device are all
/// checked before the run directory is touched.
pub fn train(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    train_rank(cfg, opts, &mut SingleRank)
}

/// `train` as one rank of a data-parallel group (`crate::dist`; `train::data_parallel` for how
/// the step is shared). Every rank runs this with the same config; rank 0 writes the run
/// directory (config, metrics, checkpoints) and runs the validation, and the others read it
/// only to resume.
pub fn train_rank(cfg: &RunConfig, opts: &TrainOptions, comm: &mut dyn Collective) -> Result<TrainSummary> {
    let owned;
    let cfg = match opts.device {
        Some(d) => {
            owned = RunConfig { device: d, ..cfg.clone() };
            &owned
        }
        None => cfg,
    };
    cfg.validate()?;
    check_supported(cfg)?;
    // Opened now, so a missing GPU fails before any work.
    match cfg.device.device().with_context(|| format!("device = {:?}", cfg.device.to_string()))? {
        None => run(CpuOps, cfg, opts, comm),
        Some(dev) => {
            // On a GPU, the memory plan first: a stage that cannot fit is refused with the plan.
            if let Some(total) = dev.total_memory()? {
                let model = ModelConfig::from_file(&cfg.model.join("config.json"))?;
                super::plan::check(&model, cfg, total as u64).with_context(|| format!("the memory plan on {}", dev.name()))?;
            }
            run(CudaOps::new(dev), cfg, opts, comm)
        }
    }
}

/// The loop on one backend: rollouts, log-probs, updates and validation all run there.
fn run<O: Ops>(ops: O, cfg: &RunConfig, opts: &TrainOptions, comm: &mut dyn Collective) -> Result<TrainSummary> {
    let run_dir = opts.resume.clone().unwrap_or_else(|| cfg.run_dir.clone());
    let writer = comm.rank() == 0;

    // Everything that can fail on bad input, before any write.
    let mut model = Model::load(&cfg.model).with_context(|| format!("model {}", cfg.model.display()))?;
    // Every rank starts from rank 0's weights (the same files, but a rank must never drift).
    comm.broadcast(model.weights.flat_mut(), 0)?;
    let tokenizer = TextTokenizer::load(&cfg.model)?;
    let generation = GenerationConfig::load(&cfg.model)?;
    let stop_ids = generation.stop_token_ids(&model.config.eos_token_ids, &tokenizer);
    let mut data = Dataset::load(&cfg.data.train, cfg.seed, cfg.data.shuffle)?;
    let stages = cfg.stages();
    let max_budget = stages.iter().map(|s| s.max_response_len).max().unwrap_or(1);
    let ctx = model.config.max_position_embeddings;
    if max_budget >= ctx {
        bail!("the largest response budget ({max_budget}) leaves no room for a prompt in the model's context of {ctx} tokens");
    }
    let prompt_limit = cfg.data.max_prompt_len.min(ctx - max_budget);
    let chat = cfg.chat_template();
    let mut encoded: Vec<Option<Vec<u32>>> = Vec::with_capacity(data.len());
    for r in data.records() {
        let t = chat.encode_user_turn(&tokenizer, &cfg.render_prompt(&r.problem))?;
        encoded.push((!t.is_empty() && t.len() <= prompt_limit).then_some(t));
    }
    let mut it = encoded.iter();
    let dropped = data
        .filter(|_| it.next().is_some_and(|t| t.is_some()))
        .with_context(|| format!("no prompt fits in {prompt_limit} tokens (data.max_prompt_len, and the context minus the largest budget)"))?;
    let prompts: Vec<Prompt> = encoded
        .into_iter()
        .flatten()
        .map(|tokens| Prompt { tokens })
        .collect();
    // The frozen reference: the starting weights, on the backend (bf16 on a GPU), or kept on the
    // host and uploaded for each log-prob pass (`loss.reference = "host"`).
    let reference = match (cfg.loss.use_kl, cfg.loss.reference) {
        (false, _) => None,
        (true, RefPlacement::Device) => Some(Reference::Resident(Transformer::new(
            model.config.clone(),
            ops.clone(),
            ops.params_from_host(&model.weights, false)?,
            model.table().clone(),
        )?)),
        (true, RefPlacement::Host) => Some(Reference::Host(model.weights.clone())),
    };
    if comm.world_size() > 1 && (opts.record_rollouts || opts.replay_rollouts.is_some()) {
        bail!("recording or replaying rollouts is for one rank (each rank holds only its share of a step's rollouts)");
    }
    let mut replay = opts.replay_rollouts.as_deref().map(Replay::load).transpose()?;
    let validator = Validator::load(cfg)?;
    if let Some(v) = &validator {
        v.check(&tokenizer, ctx, max_budget)?;
    }

    // Fresh run or resume.
    let (mut policy, mut step, mut clip_history) = match &opts.resume {
        Some(dir) => {
            let mut loaded = checkpoint::load_latest(dir)?.with_context(|| {
                format!(
                    "--resume {}: no checkpoint (no `latest`) in it",
                    dir.display()
                )
            })?;
            if format!("{:?}", loaded.model.config) != format!("{:?}", model.config) {
                bail!(
                    "checkpoint {} holds a different model than {}",
                    loaded.dir.display(),
                    cfg.model.display()
                );
            }
            loaded.model.weights.check_same_table(&model.weights, "the checkpoint's weights")?;
            comm.broadcast(loaded.model.weights.flat_mut(), 0)?;
            let policy = Policy::new(ops, model.config.clone(), &loaded.model.weights, cfg.adamw(), loaded.optimizer)?;
            data.set_cursor(loaded.state.cursor)?;
            (policy, loaded.state.step, loaded.state.clip_history)
        }
        None => {
            if writer && checkpoint::latest(&run_dir)?.is_some() {
                bail!("{} already holds a run (resume it with --resume {0}, or choose another run_dir)", run_dir.display());
            }
            (Policy::new(ops, model.config.clone(), &model.weights, cfg.adamw(), None)?, 0, Vec::new())
        }
    };
    // The host copy of the starting weights is no longer needed (the policy and the reference
    // hold theirs on the backend).
    drop(model);
    let total_steps = cfg
        .total_steps
        .unwrap_or(data.steps_per_epoch(cfg.rollout.batch_prompts) * cfg.epochs);

    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    if writer && opts.resume.is_none() {
        std::fs::write(run_dir.join("config.toml"), toml::to_string(cfg)?)
            .context("cannot write config.toml")?;
    }
    let mut log = writer.then(|| MetricsLog::open_for_resume(&run_dir.join(METRICS_FILE), step)).transpose()?;
    let reward_cfg = RewardConfig::default();
    let pass = PassOptions {
        temperature: cfg.rollout.temperature,
        ..PassOptions::default()
    };
    let bar = (writer && opts.progress && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(total_steps as u64);
        b.set_position(step as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut last_checkpoint = None;
    let steps_at_start = step;

    // Validation before the first update, logged with step 0.
    let mut pending_validation = match &validator {
        Some(v) if writer && v.at_start() && step == 0 && total_steps > 0 => {
            let budget = stages[cfg.stage_index_at(0, &clip_history)].max_response_len;
            v.run(&policy.model, &tokenizer, &stop_ids, budget, 0)?
        }
        _ => Vec::new(),
    };

    while step < total_steps {
        let t_step = Instant::now();
        let stage_index = cfg.stage_index_at(step, &clip_history);
        let stage = stages[stage_index];
        let grpo_cfg = cfg.grpo(&stage);
        let data_epoch = data.cursor().epoch;
        let batch = data.next_batch(cfg.rollout.batch_prompts);
        let n = stage.n;

        // Rollouts and rewards.
        let batch_prompts: Vec<(&[u32], &Gold)> = batch.iter().map(|rec| (prompts[rec.id].tokens.as_slice(), &rec.gold)).collect();
        let params = RolloutParams {
            seed: cfg.seed,
            step,
            first_prompt: 0,
            n,
            max_response_len: stage.max_response_len,
            temperature: cfg.rollout.temperature,
            top_p: cfg.rollout.top_p,
            min_p: cfg.rollout.min_p,
            stop_token_ids: &stop_ids,
            max_kv_tokens: cfg.rollout.kv_budget(),
        };
        let ops = policy.model.ops.clone();
        let phase_peak = |ops: &O| -> usize {
            let p = ops.memory().map_or(0, |m| m.peak);
            ops.reset_peak_memory();
            p
        };
        ops.reset_peak_memory();
        let parts = if comm.world_size() == 1 {
            let ro = match &mut replay {
                Some(r) => r.take(step, &batch_prompts, n, stage.max_response_len)?,
                None => roll_out(&policy.model, &tokenizer, &batch_prompts, &params, &reward_cfg)?,
            };
            if opts.record_rollouts {
                rollout::record(&run_dir, step, &ro)?;
            }
            vec![(0, ro)]
        } else {
            // Several ranks: each takes runs of prompt groups from rank 0 as fast as it gets
            // through them, so long responses do not leave the other ranks idle.
            let runs = RolloutRuns::new(batch_prompts.len(), comm.world_size());
            let mut parts = Vec::new();
            while let Some(i) = comm.claim(step as u64, runs.count())? {
                let r = runs.get(i);
                let p = RolloutParams { first_prompt: r.start, ..params };
                parts.push((r.start, roll_out(&policy.model, &tokenizer, &batch_prompts[r], &p, &reward_cfg)?));
            }
            parts
        };
        let rollout_peak = phase_peak(&ops);
        // Every rank's samples: the whole batch, in batch order, on every rank.
        let ro = gather_rollouts(comm, parts)?;
        let rewards = &ro.rewards;
        let adv = ro.advantages(n, cfg.loss.norm_adv_by_std, cfg.loss.adv_eps);
        let zero_var = ro.zero_variance_groups(n);
        let samples = ro.samples();

        // Old and reference log-probs, per sample: each rank scores its deal of the samples
        // (balanced by tokens), and the results are gathered.
        let t = Instant::now();
        let deal = deal_by_tokens(&samples.iter().map(|s| s.tokens.len()).collect::<Vec<_>>(), comm.world_size());
        let mine: Vec<Sample> = deal[comm.rank()].iter().map(|&i| samples[i]).collect();
        // This rank's tokens (its phase times are its own; the deal gives each rank about as many).
        let seq_tokens: u64 = mine.iter().map(|s| s.tokens.len() as u64).sum();
        let score = |model: &Transformer<O>| -> Result<Vec<Vec<f32>>> {
            if mine.is_empty() {
                return Ok(Vec::new());
            }
            let lp = response_logprobs(model, &mine, &pass)?.logp;
            let mut out = Vec::with_capacity(mine.len());
            let mut off = 0;
            for s in &mine {
                out.push(lp[off..off + s.response_len()].to_vec());
                off += s.response_len();
            }
            Ok(out)
        };
        let old_mine = score(&policy.model)?;
        let sampled: Vec<Vec<f32>> = deal[comm.rank()].iter().map(|&i| ro.logprobs[i].clone()).collect();
        let mismatch = gather_gap(comm, &sampled, &old_mine)?;
        let old = gather_per_sample(comm, &deal, old_mine)?;
        let refs_mine = match &reference {
            Some(Reference::Resident(r)) => Some(score(r)?),
            Some(Reference::Host(w)) => {
                // On the device only for this pass: freed when `r` drops, before the update.
                let cfg = policy.model.config.clone();
                let r = Transformer::new(cfg, ops.clone(), ops.params_from_host(w, false)?, w.table().clone())?;
                Some(score(&r)?)
            }
            None => None,
        };
        let refs = refs_mine.map(|r| gather_per_sample(comm, &deal, r)).transpose()?;
        let logprob_time =
            PhaseTime::new(t.elapsed().as_secs_f64(), seq_tokens * if refs.is_some() { 2 } else { 1 });
        let logprobs_peak = phase_peak(&ops);

        // Updates.
        let t = Instant::now();
        let batch_in = UpdateBatch { samples: &samples, n, advantages: &adv, old_logp: &old, ref_logp: refs.as_deref() };
        let plan = UpdatePlan {
            seed: cfg.seed,
            step,
            ppo_epochs: cfg.optim.ppo_epochs,
            mini_batch_prompts: cfg.optim.mini_batch_prompts,
            micro: cfg.micro_batch(),
            grpo: &grpo_cfg,
            pass: &pass,
        };
        let u = ppo_updates_on(&mut policy, &batch_in, &plan, comm)?;
        let update_time = PhaseTime::new(t.elapsed().as_secs_f64(), seq_tokens * cfg.optim.ppo_epochs as u64);
        let peak_memory = ops.memory().map(|_| PhaseMemory { rollout: rollout_peak, logprobs: logprobs_peak, update: phase_peak(&ops) });

        let lens: Vec<(usize, bool)> = (0..ro.seqs.len()).map(|i| (ro.response_len(i), ro.correct[i])).collect();
        let clip_ratio = ro.cut.iter().filter(|&&c| c).count() as f64 / ro.cut.len() as f64;
        // The step's time, without the validation (which reports its own).
        let step_secs = t_step.elapsed().as_secs_f64();
        if let Some(v) = validator.as_ref().filter(|v| writer && v.due_after(step + 1, total_steps)) {
            let budget = stage.max_response_len;
            pending_validation.extend(v.run(&policy.model, &tokenizer, &stop_ids, budget, step + 1)?);
        }
        let metrics = StepMetrics {
            step,
            stage: stage_index,
            max_response_len: stage.max_response_len,
            n,
            epoch: data_epoch,
            reward_mean: rewards.iter().map(|&r| r as f64).sum::<f64>() / rewards.len() as f64,
            accuracy: ro.correct.iter().filter(|&&c| c).count() as f64 / ro.correct.len() as f64,
            response_len: ResponseLens::from_samples(&lens),
            clip_ratio,
            prompts_dropped: dropped,
            zero_variance_groups: zero_var,
            pg_loss: finite(u.pg_loss),
            kl: finite(u.kl),
            entropy: finite(u.entropy),
            clip_frac: finite(u.clip_frac),
            approx_kl: finite(u.approx_kl),
            grad_norm: finite(u.grad_norm),
            lr: u.lr,
            skipped_updates: u.skipped,
            logprob_gap: mismatch,
            peak_memory,
            rollout: ro.rollout_time,
            verify: ro.verify_time,
            logprobs: logprob_time,
            update: update_time,
            step_secs,
            validation: std::mem::take(&mut pending_validation),
        };
        if let Some(log) = &mut log {
            log.append(&metrics)?;
        }
        clip_history.truncate(step);
        clip_history.resize(step, 0.0);
        clip_history.push(clip_ratio);
        step += 1;

        let line = format!(
            "step {}/{} stage {} reward {:.3} acc {:.3} len {:.1} clip {:.2} pg {:.4} kl {:.4} gnorm {:.3} {:.2}s ({:.0} tok/s gen)",
            step,
            total_steps,
            stage_index,
            metrics.reward_mean,
            metrics.accuracy,
            metrics.response_len.all,
            clip_ratio,
            metrics.pg_loss,
            metrics.kl,
            metrics.grad_norm,
            metrics.step_secs,
            ro.rollout_time.tokens_per_s
        );
        match &bar {
            Some(b) => {
                b.set_position(step as u64);
                b.set_message(line);
            }
            None if writer && opts.progress => eprintln!("{line}"),
            None => {}
        }

        let every = cfg.checkpoint.every;
        if writer && ((every > 0 && step % every == 0) || step == total_steps) {
            let state = TrainerState {
                step,
                cursor: data.cursor(),
                stage_index: cfg.stage_index_at(step, &clip_history),
                seed: cfg.seed,
                rng_state: Vec::new(),
                clip_history: clip_history.clone(),
                extra: serde_json::json!({ "prompts_dropped": dropped }),
            };
            let opt_state = cfg.checkpoint.save_optimizer.then(|| policy.optimizer_state()).transpose()?;
            let weights = policy.host_weights()?;
            let req = SaveRequest {
                weights: &weights,
                source_model_dir: &cfg.model,
                dtype: cfg.checkpoint.dtype,
                optimizer: opt_state.as_ref(),
                state: &state,
            };
            last_checkpoint = Some(checkpoint::save(&run_dir, &req, cfg.checkpoint.keep_last)?);
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(TrainSummary {
        run_dir,
        steps: step,
        steps_run: step - steps_at_start,
        last_checkpoint,
        prompts_dropped: dropped,
    })
}

/// Loads the config file and runs `train` (the `scalerl train` entry point).
pub fn train_from_file(config: &Path, opts: &TrainOptions) -> Result<TrainSummary> {
    let cfg = RunConfig::load(config)?;
    train(&cfg, opts)
}
