//! The embedded default run of `scalerl train` (no `--config`): a tiny Qwen2 model trained from
//! scratch on the CPU on a built-in synthetic task whose answers the math reward grades —
//! small additions, prompt `12+34=`, target `<think>12+34</think>\boxed{46}` + EOS.
//!
//! 1. a tiny Qwen2 (hidden 64, 2 layers, 4 heads, 2 KV heads) with random weights from a fixed
//!    seed, and the byte-level BPE test tokenizer (embedded; `<think>`/`</think>` are ordinary
//!    added tokens, as in R1-Distill, so the decoded response keeps them for the grader);
//! 2. a short SFT warm start (cross-entropy on the correct targets) so that some samples are
//!    right; its result is written as a Hugging Face model to `run_dir/sft-model/`;
//! 3. the GRPO loop (`trainer::train`) from that model on the synthetic problems
//!    (`run_dir/train.json`), with the same `metrics.jsonl` and checkpoints as any run;
//! 4. greedy accuracy on the held-out problems (`run_dir/heldout.json`) through the loop's
//!    validation: before the first GRPO step, every sixth of the run and at the end, so the
//!    accuracy curve lands in `metrics.jsonl` and `scalerl plot`'s validation chart.

use super::adamw::{AdamW, AdamWConfig, LrSchedule};
use super::checkpoint::{self, write_model_safetensors};
use super::config::{RunConfig, SaveDtype};
use super::grpo::LossAgg;
use super::step::{sft_backward, PassOptions, Sample};
use super::trainer::{train, TrainOptions, TrainSummary};
use crate::engine::{generate, FinishReason, GenerateOptions, Request, SamplingParams};
use crate::model::chat::ChatTemplate;
use crate::model::config::ModelConfig;
use crate::model::{Model, TextTokenizer};
use crate::params::{HostParams, ParamTable, Role};
use crate::util::Rng;
use crate::reward::{grade, Gold, RewardConfig};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A small byte-level BPE tokenizer with R1-Distill's special tokens (the same one the test
/// fixtures use; shipped in `assets/default-run/`).
const BASE_TOKENIZER_JSON: &str = include_str!("../../assets/default-run/tokenizer.json");
const TOKENIZER_CONFIG_JSON: &str = include_str!("../../assets/default-run/tokenizer_config.json");
const EOS_ID: u32 = 286;
const BOS_ID: u32 = 289;
/// Vocabulary of the model: the tokenizer's 294 ids rounded up.
const VOCAB: usize = 296;

/// How the default run runs.
#[derive(Debug, Clone)]
pub struct DefaultRunOptions {
    pub run_dir: PathBuf,
    pub seed: u64,
    /// Operands are drawn from `0..max_operand`.
    pub max_operand: u32,
    pub sft_steps: usize,
    pub sft_batch: usize,
    pub sft_lr: f32,
    pub grpo_steps: usize,
    pub grpo_batch_prompts: usize,
    pub grpo_n: usize,
    pub grpo_lr: f32,
    /// Held-out problems for the accuracy before and after GRPO.
    pub eval_problems: usize,
    pub progress: bool,
}

impl Default for DefaultRunOptions {
    fn default() -> Self {
        DefaultRunOptions {
            run_dir: PathBuf::from("runs/default"),
            seed: 1,
            max_operand: 20,
            sft_steps: 150,
            sft_batch: 32,
            sft_lr: 3e-3,
            grpo_steps: 600,
            grpo_batch_prompts: 16,
            grpo_n: 8,
            grpo_lr: 5e-4,
            eval_problems: 80,
            progress: true,
        }
    }
}

/// What the default run reports.
#[derive(Debug, Clone)]
pub struct DefaultRunSummary {
    /// Greedy accuracy on the held-out problems after SFT (before GRPO).
    pub start_accuracy: f64,
    /// The same after GRPO.
    pub end_accuracy: f64,
    /// Mean training reward (sampled, temperature 1) of the first and of the last tenth of the
    /// GRPO steps, from `metrics.jsonl`.
    pub reward_first: f64,
    pub reward_last: f64,
    pub sft_loss: f64,
    pub sft_secs: f64,
    pub grpo_secs: f64,
    pub train: TrainSummary,
}

/// The embedded tokenizer.json with `<think>` and `</think>` as non-special added tokens (as in
/// DeepSeek-R1-Distill), so that decoding with `skip_special_tokens` keeps them.
pub fn tokenizer_json() -> String {
    let mut v: serde_json::Value = serde_json::from_str(BASE_TOKENIZER_JSON).expect("embedded tokenizer.json");
    if let Some(added) = v.get_mut("added_tokens").and_then(|a| a.as_array_mut()) {
        for t in added {
            let c = t.get("content").and_then(|c| c.as_str()).unwrap_or("");
            if c == "<think>" || c == "</think>" {
                t["special"] = serde_json::Value::Bool(false);
            }
        }
    }
    serde_json::to_string(&v).expect("serialize tokenizer.json")
}

/// config.json of the tiny Qwen2.
pub fn model_config_json() -> String {
    serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": 64,
        "intermediate_size": 192,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "torch_dtype": "float32",
        "use_sliding_window": false,
        "sliding_window": null,
        "initializer_range": 0.02
    })
    .to_string()
}

fn generation_config_json() -> String {
    serde_json::json!({ "bos_token_id": BOS_ID, "eos_token_id": [EOS_ID] }).to_string()
}

/// Random weights from the table's roles: N(0, 0.02) matrices, residual-branch outputs
/// (o_proj, down_proj) scaled down by √(2·layers), unit norms, zero biases.
pub fn init_weights(c: &ModelConfig, seed: u64) -> HostParams {
    let mut rng = Rng::new(seed ^ 0x1217_0000_0000_0001);
    let std = 0.02;
    let out_std = std / (2.0 * c.num_layers as f64).sqrt();
    HostParams::from_fn(&ParamTable::new(c), |e, v| match e.role {
        Role::Matrix => v.iter_mut().for_each(|x| *x = (rng.normal() * std) as f32),
        Role::ResidualOut => v.iter_mut().for_each(|x| *x = (rng.normal() * out_std) as f32),
        Role::Norm => v.fill(1.0),
        Role::Bias => v.fill(0.0),
    })
}

/// One synthetic problem: `a+b=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Problem {
    pub a: u32,
    pub b: u32,
}

impl Problem {
    pub fn text(&self) -> String {
        format!("{}+{}=", self.a, self.b)
    }
    pub fn answer(&self) -> u32 {
        self.a + self.b
    }
    /// The correct response (without EOS).
    pub fn target(&self) -> String {
        format!("<think>{}+{}</think>\\boxed{{{}}}", self.a, self.b, self.answer())
    }
}

/// Every pair in `0..max_operand`², shuffled by `seed`, split into (train, held-out eval).
pub fn problems(max_operand: u32, eval: usize, seed: u64) -> (Vec<Problem>, Vec<Problem>) {
    let pairs: Vec<Problem> = (0..max_operand).flat_map(|a| (0..max_operand).map(move |b| Problem { a, b })).collect();
    let mut all: Vec<Problem> = Rng::new(seed ^ 0x5EED_DA7A).permutation(pairs.len()).into_iter().map(|i| pairs[i]).collect();
    let eval = eval.min(all.len() / 2);
    let train = all.split_off(eval);
    (train, all)
}

/// The prompt tokens of a problem (R1-Distill chat template).
fn prompt_tokens(tok: &TextTokenizer, p: &Problem) -> Result<Vec<u32>> {
    ChatTemplate::R1Distill.encode_user_turn(tok, &p.text())
}

/// Writes a Hugging Face model directory (config, generation config, tokenizer, weights).
pub fn write_model_dir(dir: &Path, config_json: &str, weights: &HostParams, cfg: &ModelConfig) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join("config.json"), config_json)?;
    std::fs::write(dir.join("generation_config.json"), generation_config_json())?;
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json())?;
    std::fs::write(dir.join("tokenizer_config.json"), TOKENIZER_CONFIG_JSON)?;
    write_model_safetensors(dir, weights, cfg, SaveDtype::F32)
}

/// The tokenizer, through a model directory (so it is the same as the run's).
fn load_tokenizer(dir: &Path) -> Result<TextTokenizer> {
    TextTokenizer::load(dir)
}

/// SFT warm start: `steps` AdamW updates on batches of correct (prompt, target + EOS) pairs.
/// Returns the mean loss of the last 10% of the steps.
pub fn sft(model: &mut Model, tok: &TextTokenizer, train: &[Problem], steps: usize, batch: usize, lr: f32, seed: u64, progress: bool) -> Result<f64> {
    let seqs: Vec<(Vec<u32>, usize)> = train
        .iter()
        .map(|p| {
            let mut s = prompt_tokens(tok, p)?;
            let pl = s.len();
            s.extend(tok.encode(&p.target(), false)?);
            s.push(EOS_ID);
            Ok((s, pl))
        })
        .collect::<Result<_>>()?;
    let cfg = AdamWConfig {
        schedule: LrSchedule { lr, warmup_steps: steps / 10, zero_first_step: false },
        weight_decay: 0.0,
        max_grad_norm: Some(1.0),
        ..AdamWConfig::default()
    };
    let mut optim = AdamW::new(cfg, &model.ops, model.table())?;
    let mut grads = HostParams::zeros(model.table());
    let pass = PassOptions { temperature: 1.0, ..PassOptions::default() };
    let mut rng = Rng::new(seed ^ 0x5F7);
    let tail = (steps / 10).max(1);
    let (mut tail_loss, mut tail_n) = (0.0, 0);
    for step in 0..steps {
        let samples: Vec<Sample> = (0..batch)
            .map(|_| {
                let (s, pl) = &seqs[rng.below(seqs.len() as u64) as usize];
                Sample { tokens: s, prompt_len: *pl }
            })
            .collect();
        grads.flat_mut().fill(0.0);
        let loss = sft_backward(model, &samples, LossAgg::TokenMean, &pass, &mut grads)?;
        optim.step(&model.ops, &mut model.weights, &mut grads)?;
        if step + tail >= steps {
            tail_loss += loss;
            tail_n += 1;
        }
        if progress && (step + 1) % 50 == 0 {
            eprintln!("sft {}/{steps} loss {loss:.4}", step + 1);
        }
    }
    Ok(tail_loss / tail_n.max(1) as f64)
}

/// Accuracy on `problems` (graded by the math reward; a response cut at the budget is wrong).
/// `temperature` 0 is greedy.
pub fn accuracy(model: &Model, tok: &TextTokenizer, problems: &[Problem], temperature: f32, seed: u64) -> Result<f64> {
    if problems.is_empty() {
        return Ok(0.0);
    }
    let requests = problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ok(Request {
                prompt: prompt_tokens(tok, p)?,
                params: SamplingParams {
                    temperature,
                    top_p: 1.0,
                    top_k: 0,
                    min_p: 0.0,
                    seed: seed.wrapping_add(i as u64),
                    max_new_tokens: 32,
                    stop_token_ids: vec![EOS_ID],
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let out = generate(model, &requests, &GenerateOptions::default(), |_, _, _| {})?;
    let rc = RewardConfig::default();
    let mut right = 0;
    for (c, p) in out.iter().zip(problems) {
        let text = tok.decode(&c.tokens, true)?;
        let gold = Gold::from_json(&serde_json::json!(p.answer().to_string())).context("gold")?;
        if c.finish == FinishReason::Stop && grade(&text, &gold, &rc).reward == rc.correct_reward {
            right += 1;
        }
    }
    Ok(right as f64 / problems.len() as f64)
}

/// The GRPO run config of the default run.
pub fn grpo_config(o: &DefaultRunOptions, model_dir: &Path, data: &Path, heldout: &Path) -> Result<RunConfig> {
    let text = format!(
        r#"
model = {model:?}
run_dir = {run:?}
seed = {seed}
total_steps = {steps}

[data]
train = [{data:?}]
shuffle = true
prompt_template = "{{problem}}"
chat_template = "r1-distill"
max_prompt_len = 32

[rollout]
batch_prompts = {bp}
n = {n}
max_response_len = 24
temperature = 1.0
top_p = 1.0

[loss]
use_kl = false
entropy_coef = 0.0
loss_agg = "token-mean"

[optim]
lr = {lr:e}
weight_decay = 0.0
mini_batch_prompts = {mbp}
ppo_epochs = 1

[checkpoint]
every = {every}
keep_last = 2
dtype = "f32"
save_optimizer = true

[validation]
every = {val_every}
at_start = true
benchmarks = [{heldout:?}]
n = 1
temperature = 0.0
max_response_len = 32
"#,
        model = model_dir.display().to_string(),
        run = o.run_dir.display().to_string(),
        seed = o.seed,
        steps = o.grpo_steps,
        data = data.display().to_string(),
        bp = o.grpo_batch_prompts,
        n = o.grpo_n,
        lr = o.grpo_lr,
        mbp = o.grpo_batch_prompts,
        every = (o.grpo_steps / 2).max(1),
        val_every = (o.grpo_steps / 6).max(1),
        heldout = heldout.display().to_string(),
    );
    RunConfig::from_toml_str(&text)
}

/// Runs the whole default run (see the module doc).
pub fn run_default(o: &DefaultRunOptions) -> Result<DefaultRunSummary> {
    if checkpoint::latest(&o.run_dir)?.is_some() {
        bail!("{} already holds a run (remove it, or resume it with `scalerl train --config {0}/config.toml --resume {0}`)", o.run_dir.display());
    }
    let config_json = model_config_json();
    let mcfg = ModelConfig::from_json(&config_json)?;
    let mut model = Model::from_weights(mcfg.clone(), init_weights(&mcfg, o.seed))?;
    let init_dir = o.run_dir.join("init-model");
    write_model_dir(&init_dir, &config_json, &model.weights, &model.config)?;
    let tok = load_tokenizer(&init_dir)?;
    if tok.vocab_size() > VOCAB {
        bail!("the embedded tokenizer has {} ids, the model {VOCAB}", tok.vocab_size());
    }
    let (train_set, eval_set) = problems(o.max_operand, o.eval_problems, o.seed);
    if o.progress {
        eprintln!(
            "default run: tiny Qwen2 from scratch on {}+{} problems ({} train, {} held out) in {}",
            o.max_operand - 1,
            o.max_operand - 1,
            train_set.len(),
            eval_set.len(),
            o.run_dir.display()
        );
    }

    let t = Instant::now();
    let sft_loss = sft(&mut model, &tok, &train_set, o.sft_steps, o.sft_batch, o.sft_lr, o.seed, o.progress)?;
    let sft_secs = t.elapsed().as_secs_f64();
    let model_dir = o.run_dir.join("sft-model");
    write_model_dir(&model_dir, &config_json, &model.weights, &model.config)?;
    if o.progress {
        eprintln!("after SFT ({} steps, {sft_secs:.1}s, loss {sft_loss:.4})", o.sft_steps);
    }

    // The problems as DeepScaleR-style JSON data files, for the trainer and its validation.
    let write_problems = |name: &str, set: &[Problem]| -> Result<PathBuf> {
        let path = o.run_dir.join(name);
        let records: Vec<serde_json::Value> =
            set.iter().map(|p| serde_json::json!({ "problem": p.text(), "answer": p.answer().to_string() })).collect();
        std::fs::write(&path, serde_json::to_string(&records)?).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let data_path = write_problems("train.json", &train_set)?;
    let heldout_path = write_problems("heldout.json", &eval_set)?;
    let cfg = grpo_config(o, &model_dir, &data_path, &heldout_path)?;
    let t = Instant::now();
    let summary = train(&cfg, &TrainOptions { progress: o.progress, ..TrainOptions::default() })?;
    let grpo_secs = t.elapsed().as_secs_f64();
    let (m, _) = super::metrics::read_metrics(&o.run_dir.join(super::metrics::METRICS_FILE))?;
    let k = (m.len() / 10).max(1).min(m.len().max(1));
    let mean = |xs: &[super::metrics::StepMetrics]| xs.iter().map(|x| x.reward_mean).sum::<f64>() / xs.len().max(1) as f64;
    let (reward_first, reward_last) = (mean(&m[..k.min(m.len())]), mean(&m[m.len().saturating_sub(k)..]));
    // Held-out accuracy before the first GRPO step and after the last, from the validations.
    let held_out = |after: usize| {
        m.iter()
            .flat_map(|r| &r.validation)
            .find(|v| v.after_steps == after)
            .map(|v| v.pass_at_1)
            .with_context(|| format!("no held-out validation after {after} steps in metrics.jsonl"))
    };
    let (start_accuracy, end_accuracy) = (held_out(0)?, held_out(summary.steps)?);
    if o.progress {
        eprintln!("after GRPO ({} steps, {grpo_secs:.1}s): held-out greedy accuracy {start_accuracy:.3} -> {end_accuracy:.3} ({} problems); training reward {reward_first:.3} (first tenth) -> {reward_last:.3} (last tenth)", summary.steps, eval_set.len());
    }
    Ok(DefaultRunSummary { start_accuracy, end_accuracy, reward_first, reward_last, sft_loss, sft_secs, grpo_secs, train: summary })
}
