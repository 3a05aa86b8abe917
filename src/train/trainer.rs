//! The GRPO training loop of `scalerl train` on the CPU backend (DeepScaleR / verl's step):
//!
//! 1. the stage of this step (`RunConfig::stage_index_at` with the clip-ratio history);
//! 2. the next `batch_prompts` prompts from the data set (prompts rendered with the config's
//!    template and chat template; prompts over the length limit were dropped at load);
//! 3. rollouts: `n` samples per prompt with `engine::generate` at the stage's budget, every
//!    sample seeded from (seed, step, prompt, sample), so a resumed run reproduces exactly;
//! 4. rewards: the math reward in parallel; a response cut at the budget is wrong;
//! 5. group advantages; old log-probs (the policy before the update) and reference log-probs
//!    (the frozen initial model, kept in memory; skipped when the KL term is off);
//! 6. for `ppo_epochs`: prompts shuffled (seeded by (seed, step, epoch)) into mini-batches of
//!    `mini_batch_prompts` prompts with all their samples; `grpo_backward` + one AdamW update
//!    per mini-batch (a non-finite loss or gradient skips the update and is counted);
//! 7. one `StepMetrics` record appended to `run_dir/metrics.jsonl`, one progress line;
//! 8. a checkpoint every `checkpoint.every` steps and at the end (atomic, newest K kept).
//!
//! Resuming (`TrainOptions::resume`) loads the latest checkpoint (weights, optimizer moments,
//! data cursor, step, clip history) and continues; with `checkpoint.dtype = "f32"` and
//! `save_optimizer = true` the continued run is bit-identical to an uninterrupted one.
//!
//! Micro-batching: `optim.micro_batch_seqs` > 0 runs each mini-batch in passes of that many
//! sequences whose gradients are scaled to sum to the whole mini-batch's (same loss, less memory).
//!
//! Not yet here: periodic validation
//! (`[validation]` is refused), the CUDA backend.

use super::adamw::AdamW;
use super::checkpoint::{self, SaveRequest, TrainerState};
use super::config::RunConfig;
use super::data::{epoch_order, Dataset};
use super::grads::{clone_weights, Grads};
use super::grpo::grpo_advantages;
use super::metrics::{MetricsLog, PhaseTime, ResponseLens, StepMetrics, METRICS_FILE};
use super::step::{
    broadcast_advantages, grpo_backward, policy_backward, response_logprobs, GrpoInputs,
    PassOptions, Sample,
};
use crate::engine::{generate, FinishReason, GenerateOptions, Request, SamplingParams};
use crate::model::{GenerationConfig, Model, TextTokenizer};
use crate::reward::{grade_batch, Gold, RewardConfig};
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
struct Prompt {
    tokens: Vec<u32>,
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The sampling seed of one rollout: a hash of (seed, step, prompt in batch, sample).
pub fn rollout_seed(seed: u64, step: usize, prompt: usize, sample: usize) -> u64 {
    let mut s = mix(seed ^ 0x7261_696E_5EED_0000);
    for part in [step as u64, prompt as u64, sample as u64] {
        s = mix(s ^ part);
    }
    s
}

/// Every id that ends a generation (as `cli::model_dir::LoadedModel::stop_token_ids`).
fn stop_token_ids(model: &Model, tok: &TextTokenizer, gen: &GenerationConfig) -> Vec<u32> {
    let mut ids: Vec<u32> = gen
        .eos_token_id
        .as_ref()
        .map(|e| e.to_vec())
        .unwrap_or_default();
    ids.extend(&model.config.eos_token_ids);
    if let Some(id) = tok.eos_token.as_deref().and_then(|t| tok.token_to_id(t)) {
        ids.push(id);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Refuses settings the CPU loop does not implement yet (before any work).
fn check_supported(cfg: &RunConfig) -> Result<()> {
    if cfg.validation.is_some() {
        bail!("[validation] during training is not implemented yet (remove the table; use `scalerl eval`)");
    }
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

/// Runs (or resumes) a training run. Config, data set and model are all checked before the run
/// directory is touched.
pub fn train(cfg: &RunConfig, opts: &TrainOptions) -> Result<TrainSummary> {
    cfg.validate()?;
    check_supported(cfg)?;
    let run_dir = opts.resume.clone().unwrap_or_else(|| cfg.run_dir.clone());

    // Everything that can fail on bad input, before any write.
    let mut model =
        Model::load(&cfg.model).with_context(|| format!("model {}", cfg.model.display()))?;
    let tokenizer = TextTokenizer::load(&cfg.model)?;
    let generation = GenerationConfig::load(&cfg.model)?;
    let stop_ids = stop_token_ids(&model, &tokenizer, &generation);
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
    let reference = cfg.loss.use_kl.then(|| clone_weights(&model.weights));

    // Fresh run or resume.
    let (mut optim, mut step, mut clip_history) = match &opts.resume {
        Some(dir) => {
            let loaded = checkpoint::load_latest(dir)?.with_context(|| {
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
            model.weights = loaded.model.weights;
            let optim = match loaded.optimizer {
                Some(o) => AdamW::from_state(cfg.adamw(), &model.weights, o)?,
                None => AdamW::new(cfg.adamw(), &mut model.weights),
            };
            data.set_cursor(loaded.state.cursor)?;
            (optim, loaded.state.step, loaded.state.clip_history)
        }
        None => {
            if checkpoint::latest(&run_dir)?.is_some() {
                bail!("{} already holds a run (resume it with --resume {0}, or choose another run_dir)", run_dir.display());
            }
            (AdamW::new(cfg.adamw(), &mut model.weights), 0, Vec::new())
        }
    };
    let total_steps = cfg
        .total_steps
        .unwrap_or(data.steps_per_epoch(cfg.rollout.batch_prompts) * cfg.epochs);

    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    if opts.resume.is_none() {
        std::fs::write(run_dir.join("config.toml"), toml::to_string(cfg)?)
            .context("cannot write config.toml")?;
    }
    let mut log = MetricsLog::open_for_resume(&run_dir.join(METRICS_FILE), step)?;
    let reward_cfg = RewardConfig::default();
    let pass = PassOptions {
        temperature: cfg.rollout.temperature,
        ..PassOptions::default()
    };
    let gen_opts = GenerateOptions::default();
    let bar = (opts.progress && std::io::stderr().is_terminal()).then(|| {
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

    while step < total_steps {
        let t_step = Instant::now();
        let stage_index = cfg.stage_index_at(step, &clip_history);
        let stage = stages[stage_index];
        let grpo_cfg = cfg.grpo(&stage);
        let data_epoch = data.cursor().epoch;
        let batch = data.next_batch(cfg.rollout.batch_prompts);
        let n = stage.n;

        // Rollouts.
        let t = Instant::now();
        let mut requests = Vec::with_capacity(batch.len() * n);
        for (pi, rec) in batch.iter().enumerate() {
            for si in 0..n {
                requests.push(Request {
                    prompt: prompts[rec.id].tokens.clone(),
                    params: SamplingParams {
                        temperature: cfg.rollout.temperature,
                        top_p: cfg.rollout.top_p,
                        top_k: 0,
                        seed: rollout_seed(cfg.seed, step, pi, si),
                        max_new_tokens: stage.max_response_len,
                        stop_token_ids: stop_ids.clone(),
                    },
                });
            }
        }
        let completions = generate(&model, &requests, &gen_opts, |_, _, _| {})?;
        let gen_tokens: u64 = completions.iter().map(|c| c.tokens.len() as u64).sum();
        let rollout_time = PhaseTime::new(t.elapsed().as_secs_f64(), gen_tokens);

        // Rewards.
        let t = Instant::now();
        let texts: Vec<String> = completions
            .iter()
            .map(|c| tokenizer.decode(&c.tokens, true))
            .collect::<Result<_>>()?;
        let items: Vec<(&str, &Gold)> = texts
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), &batch[i / n].gold))
            .collect();
        let grades = grade_batch(&items, &reward_cfg);
        let rewards: Vec<f32> = grades
            .iter()
            .zip(&completions)
            .map(|(g, c)| {
                if c.finish == FinishReason::Length {
                    reward_cfg.wrong_reward
                } else {
                    g.reward
                }
            })
            .collect();
        let correct: Vec<bool> = rewards
            .iter()
            .map(|&r| r == reward_cfg.correct_reward)
            .collect();
        let verify_time = PhaseTime::new(t.elapsed().as_secs_f64(), 0);
        let groups: Vec<usize> = (0..requests.len()).map(|i| i / n).collect();
        let adv = grpo_advantages(
            &rewards,
            &groups,
            cfg.loss.norm_adv_by_std,
            cfg.loss.adv_eps,
        );
        let zero_var = (0..batch.len())
            .filter(|&p| {
                rewards[p * n..(p + 1) * n]
                    .iter()
                    .all(|&r| r == rewards[p * n])
            })
            .count();

        // Sequences: prompt + response (generation already stops at the first EOS).
        let seqs: Vec<Vec<u32>> = requests
            .iter()
            .zip(&completions)
            .map(|(r, c)| [r.prompt.as_slice(), &c.tokens].concat())
            .collect();
        let samples: Vec<Sample> = seqs
            .iter()
            .zip(&requests)
            .map(|(s, r)| Sample {
                tokens: s,
                prompt_len: r.prompt.len(),
            })
            .collect();
        let seq_tokens: u64 = seqs.iter().map(|s| s.len() as u64).sum();

        // Old and reference log-probs, per sample.
        let t = Instant::now();
        let per_sample = |lp: Vec<f32>| -> Vec<Vec<f32>> {
            let mut out = Vec::with_capacity(samples.len());
            let mut off = 0;
            for s in &samples {
                out.push(lp[off..off + s.response_len()].to_vec());
                off += s.response_len();
            }
            out
        };
        let old =
            per_sample(response_logprobs(&model.config, &model.weights, &samples, &pass)?.logp);
        let refs = match &reference {
            Some(w) => Some(per_sample(
                response_logprobs(&model.config, w, &samples, &pass)?.logp,
            )),
            None => None,
        };
        let logprob_time = PhaseTime::new(
            t.elapsed().as_secs_f64(),
            seq_tokens * if refs.is_some() { 2 } else { 1 },
        );

        // Updates.
        let t = Instant::now();
        let mut grads = Grads::zeros_like(&model.weights);
        let (mut pg, mut kl, mut ent, mut cf, mut akl, mut gn, mut updates, mut skipped) =
            (0f64, 0f64, 0f64, 0f64, 0f64, 0f64, 0usize, 0usize);
        let mut lr = 0f64;
        let mbp = cfg.optim.mini_batch_prompts;
        for epoch in 0..cfg.optim.ppo_epochs {
            let order = epoch_order(
                batch.len(),
                mix(cfg.seed ^ mix(step as u64)),
                epoch as u64,
                true,
            );
            for chunk in order.chunks(mbp) {
                let idx: Vec<usize> = chunk.iter().flat_map(|&p| p * n..(p + 1) * n).collect();
                let mb: Vec<Sample> = idx.iter().map(|&i| samples[i]).collect();
                let mb_adv: Vec<f32> = idx.iter().map(|&i| adv[i]).collect();
                let advantages = broadcast_advantages(&mb, &mb_adv);
                let old_logp: Vec<f32> = idx.iter().flat_map(|&i| old[i].iter().copied()).collect();
                let ref_logp: Option<Vec<f32>> = refs
                    .as_ref()
                    .map(|r| idx.iter().flat_map(|&i| r[i].iter().copied()).collect());
                grads.zero();
                let out = minibatch_backward(
                    &model,
                    &mb,
                    &GrpoInputs {
                        advantages: &advantages,
                        old_logp: &old_logp,
                        ref_logp: ref_logp.as_deref(),
                    },
                    &grpo_cfg,
                    &pass,
                    cfg.optim.micro_batch_seqs,
                    &mut grads,
                )?;
                let report = if out.loss.is_finite() {
                    let r = optim.step(&mut model.weights, &mut grads);
                    lr = r.lr as f64;
                    Some(r)
                } else {
                    optim.steps += 1; // a skipped update still advances the schedule
                    None
                };
                match report {
                    Some(r) if !r.skipped => {
                        updates += 1;
                        pg += out.pg_loss;
                        kl += out.kl_loss;
                        ent += out.entropy_mean;
                        cf += out.clip_frac;
                        akl += out.approx_kl;
                        gn += r.grad_norm;
                    }
                    _ => skipped += 1,
                }
            }
        }
        let update_time = PhaseTime::new(
            t.elapsed().as_secs_f64(),
            seq_tokens * cfg.optim.ppo_epochs as u64,
        );
        let u = updates.max(1) as f64;

        let lens: Vec<(usize, bool)> = completions
            .iter()
            .zip(&correct)
            .map(|(c, &ok)| (c.tokens.len(), ok))
            .collect();
        let cut = completions
            .iter()
            .filter(|c| c.finish == FinishReason::Length)
            .count();
        let clip_ratio = cut as f64 / completions.len() as f64;
        let metrics = StepMetrics {
            step,
            stage: stage_index,
            max_response_len: stage.max_response_len,
            n,
            epoch: data_epoch,
            reward_mean: rewards.iter().map(|&r| r as f64).sum::<f64>() / rewards.len() as f64,
            accuracy: correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64,
            response_len: ResponseLens::from_samples(&lens),
            clip_ratio,
            prompts_dropped: dropped,
            zero_variance_groups: zero_var,
            pg_loss: finite(pg / u),
            kl: finite(kl / u),
            entropy: finite(ent / u),
            clip_frac: finite(cf / u),
            approx_kl: finite(akl / u),
            grad_norm: finite(gn / u),
            lr,
            skipped_updates: skipped,
            rollout: rollout_time,
            verify: verify_time,
            logprobs: logprob_time,
            update: update_time,
            step_secs: t_step.elapsed().as_secs_f64(),
            validation: Vec::new(),
        };
        log.append(&metrics)?;
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
            rollout_time.tokens_per_s
        );
        match &bar {
            Some(b) => {
                b.set_position(step as u64);
                b.set_message(line);
            }
            None if opts.progress => eprintln!("{line}"),
            None => {}
        }

        let every = cfg.checkpoint.every;
        if (every > 0 && step % every == 0) || step == total_steps {
            let state = TrainerState {
                step,
                cursor: data.cursor(),
                stage_index: cfg.stage_index_at(step, &clip_history),
                seed: cfg.seed,
                rng_state: Vec::new(),
                clip_history: clip_history.clone(),
                extra: serde_json::json!({ "prompts_dropped": dropped }),
            };
            let opt_state = cfg
                .checkpoint
                .save_optimizer
                .then(|| optim.export_state(&model.weights));
            let req = SaveRequest {
                weights: &model.weights,
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

/// The loss parts of one mini-batch (as `GrpoOutput`, without the gradients).
struct MiniBatchLoss {
    loss: f64,
    pg_loss: f64,
    kl_loss: f64,
    entropy_mean: f64,
    clip_frac: f64,
    approx_kl: f64,
}

/// GRPO loss and gradient of a mini-batch, accumulated into `grads`: in one pass
/// (`micro_seqs` = 0 or ≥ the batch), or in passes of `micro_seqs` sequences whose per-token
/// gradients are scaled so that they sum to the one-pass gradient (the aggregation weights are
/// the whole mini-batch's).
#[allow(clippy::too_many_arguments)]
fn minibatch_backward(
    model: &Model,
    mb: &[Sample],
    inputs: &GrpoInputs,
    cfg: &super::grpo::GrpoConfig,
    pass: &PassOptions,
    micro_seqs: usize,
    grads: &mut Grads,
) -> Result<MiniBatchLoss> {
    if micro_seqs == 0 || micro_seqs >= mb.len() {
        let o = grpo_backward(&model.config, &model.weights, mb, inputs, cfg, pass, grads)?;
        return Ok(MiniBatchLoss {
            loss: o.loss,
            pg_loss: o.pg_loss,
            kl_loss: o.kl_loss,
            entropy_mean: o.entropy_mean,
            clip_frac: o.clip_frac,
            approx_kl: o.approx_kl,
        });
    }
    let total_tokens: usize = mb.iter().map(|s| s.response_len()).sum();
    let total_seqs = mb.len();
    let mut acc = MiniBatchLoss {
        loss: 0.0,
        pg_loss: 0.0,
        kl_loss: 0.0,
        entropy_mean: 0.0,
        clip_frac: 0.0,
        approx_kl: 0.0,
    };
    let mut off = 0;
    for micro in mb.chunks(micro_seqs) {
        let toks: usize = micro.iter().map(|s| s.response_len()).sum();
        let r = off..off + toks;
        off += toks;
        // The micro-batch's own aggregation weights, rescaled to the mini-batch's.
        let scale = match cfg.agg {
            super::grpo::LossAgg::TokenMean => toks as f64 / total_tokens.max(1) as f64,
            _ => micro.len() as f64 / total_seqs as f64,
        };
        let token_share = toks as f64 / total_tokens.max(1) as f64;
        let out = policy_backward(
            &model.config,
            &model.weights,
            micro,
            pass,
            grads,
            |lp, lens| {
                let out = super::grpo::grpo_loss(
                    cfg,
                    &super::grpo::GrpoTokens {
                        seq_lens: lens,
                        logp: &lp.logp,
                        entropy: &lp.entropy,
                        old_logp: &inputs.old_logp[r.clone()],
                        ref_logp: inputs.ref_logp.map(|x| &x[r.clone()]),
                        advantages: &inputs.advantages[r.clone()],
                    },
                );
                let dl: Vec<f32> = out
                    .d_logp
                    .iter()
                    .map(|&d| (d as f64 * scale) as f32)
                    .collect();
                let de: Vec<f32> = out
                    .d_entropy
                    .iter()
                    .map(|&d| (d as f64 * scale) as f32)
                    .collect();
                (out, dl, Some(de))
            },
        )?;
        acc.loss += scale * out.loss;
        acc.pg_loss += scale * out.pg_loss;
        acc.kl_loss += scale * out.kl_loss;
        acc.entropy_mean += token_share * out.entropy_mean;
        acc.clip_frac += token_share * out.clip_frac;
        acc.approx_kl += token_share * out.approx_kl;
    }
    Ok(acc)
}
