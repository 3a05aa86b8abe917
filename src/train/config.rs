//! The run configuration of `scalerl train`: one TOML file, every key documented here and shown
//! (commented) in `configs/deepscaler-1.5b-8k-16k-24k.toml`. Unknown keys are refused with the
//! file and the key named. Defaults are DeepScaleR's 8K stage: 128 prompts × 8 samples, prompts
//! up to 1024 tokens, responses up to 8192, temperature 0.6, AdamW lr 1e-6, GRPO with clip 0.2,
//! low-variance KL 0.001, entropy bonus 0.001, token-mean loss.
//!
//! Iterative context lengthening: `[[stage]]` entries (8K → 16K → 24K, n 8 → 16) switch at
//! fixed steps, or earlier with `[auto_stage]` when the share of responses cut at the budget
//! stays above a threshold; `RunConfig::stage_at` decides which stage a step runs.

use super::adamw::{AdamWConfig, LrSchedule};
use super::grpo::{GrpoConfig, LossAgg};
use super::update::MicroBatch;
use crate::engine::{Backend, GenerateOptions};
use crate::model::ChatTemplate;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// DeepScaleR's prompt: the problem followed by the instruction to box the answer.
pub const DEEPSCALER_PROMPT: &str = "{problem} Let's think step by step and output the final answer within \\boxed{}.";

/// The whole run. Top-level keys plus one table per concern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Hugging Face model directory to start from (config.json, safetensors, tokenizer).
    pub model: PathBuf,
    /// Where checkpoints (`step-N/`, `latest`) and `metrics.jsonl` go.
    pub run_dir: PathBuf,
    /// Seed of the data order and of sampling.
    pub seed: u64,
    /// Stop after this many optimizer steps (`None`: run until the data's epochs are done).
    pub total_steps: Option<usize>,
    /// Passes over the training data (used when `total_steps` is not given).
    pub epochs: usize,
    /// Where the whole step runs: `cpu` (the f32 reference), `cuda` / `cuda:N` (the CUDA
    /// backend: bf16 weights and activations, f32 master weights and optimizer), or
    /// `interpret` (the CUDA backend's kernels on the CPU; slow, for checking).
    #[serde(deserialize_with = "keyed::device", serialize_with = "keyed::display")]
    pub device: Backend,
    pub data: DataConfig,
    pub rollout: RolloutConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    pub checkpoint: CheckpointConfig,
    /// Periodic validation; absent: none.
    pub validation: Option<ValidationConfig>,
    /// Context-lengthening stages, ordered by `from_step`, the first at step 0. Absent: one stage
    /// with `rollout.max_response_len` and `rollout.n`.
    pub stage: Vec<Stage>,
    /// Switch to the next stage early when responses keep hitting the budget; absent: only at
    /// the stages' `from_step`.
    pub auto_stage: Option<AutoStage>,
}

/// The training set and how a problem becomes a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Training files: DeepScaleR JSON (a list of records with `problem` and `answer`), JSONL
    /// (one record per line, by the `.jsonl` extension) or Parquet (`.parquet`: plain columns or
    /// verl's layout, see `crate::data::formats`). Concatenated in this order.
    pub train: Vec<PathBuf>,
    /// Shuffle every epoch (order = f(seed, epoch)); false: file order every epoch.
    pub shuffle: bool,
    /// The user message; `{problem}` is replaced by the problem text (nothing else is special).
    pub prompt_template: String,
    /// `model` (the tokenizer_config.json Jinja template), `r1-distill`, or `r1-distill-think`.
    #[serde(deserialize_with = "keyed::chat_template", serialize_with = "keyed::display")]
    pub chat_template: ChatTemplate,
    /// Prompts longer than this many tokens (after the chat template) are dropped and counted.
    pub max_prompt_len: usize,
}

/// Sampling of the responses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    /// Prompts per step (the train batch).
    pub batch_prompts: usize,
    /// Samples per prompt (the GRPO group) when there are no `[[stage]]`s; default 8.
    pub n: Option<usize>,
    /// Response budget in tokens when there are no `[[stage]]`s; default 8192.
    pub max_response_len: Option<usize>,
    pub temperature: f32,
    /// Nucleus sampling; 1.0 is off.
    pub top_p: f32,
    /// Keep only tokens with p ≥ min_p · p_max; 0.0 is off.
    pub min_p: f32,
    /// Moved: the top-level `device` key now says where the whole step runs. Kept only to
    /// refuse old configs with a message that says so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// KV cache capacity of a rollout, in tokens; 0 means room for the whole batch at once.
    /// Blocks are taken as sequences grow; sequences wait for room, and a full cache preempts
    /// the newest ones, recomputed later with the same result (see `engine::generate`). The
    /// default, 1,048,576 tokens, is 28 GiB of bf16 K/V for R1-Distill-Qwen-1.5B, where the
    /// 8K stage's full batch (128 prompts of up to 1024 tokens, shared by their 8 samples, and
    /// 1024 responses of up to 8192) would need 227 GiB.
    pub max_kv_tokens: usize,
}

impl RolloutConfig {
    /// `max_kv_tokens` as the engine takes it.
    pub fn kv_budget(&self) -> Option<usize> {
        (self.max_kv_tokens > 0).then_some(self.max_kv_tokens)
    }
}

/// The GRPO objective (mapped onto `GrpoConfig` by `LossConfig::grpo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// ε: the ratio is clipped to [1 − ε, 1 + ε_high].
    pub clip_ratio: f32,
    /// ε_high (DAPO clip-higher, e.g. 0.28); absent: `clip_ratio`.
    pub clip_ratio_high: Option<f32>,
    /// Dual clip (verl's `clip_ratio_c`, e.g. 3.0): for a negative advantage the per-token loss
    /// is capped at −A·c; absent: off (DeepScaleR's run).
    pub clip_ratio_c: Option<f32>,
    /// Low-variance KL penalty against the frozen reference model, on or off.
    pub use_kl: bool,
    /// Its coefficient.
    pub kl_coef: f32,
    /// Where the frozen reference model lives during a run on a GPU: `device` (bf16, resident:
    /// 2 bytes a parameter for the whole step) or `host` (uploaded for its log-prob pass each
    /// step and freed before the update: less device memory, one weight upload a step).
    #[serde(deserialize_with = "keyed::reference", serialize_with = "keyed::display")]
    pub reference: RefPlacement,
    /// Entropy bonus coefficient (0 turns it off).
    pub entropy_coef: f32,
    /// `token-mean` (DeepScaleR, DAPO), `seq-mean-token-mean` (original GRPO),
    /// `seq-mean-token-sum`, or `seq-mean-token-sum-norm` (Dr. GRPO).
    #[serde(deserialize_with = "keyed::loss_agg", serialize_with = "keyed::display")]
    pub loss_agg: AggKind,
    /// The constant of `seq-mean-token-sum-norm`; absent: the stage's `max_response_len`.
    pub loss_agg_norm: Option<f32>,
    /// Divide advantages by the group's std (GRPO); false: r − mean only (Dr. GRPO).
    pub norm_adv_by_std: bool,
    /// ε in (r − mean) / (std + ε).
    pub adv_eps: f32,
}

/// AdamW and the update batching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub lr: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Global gradient-norm clip; 0 turns clipping off.
    pub grad_clip: f32,
    /// Linear learning-rate warm-up steps (0: constant).
    pub warmup_steps: usize,
    /// transformers' convention: step 0 of the schedule has lr 0 (verl's behaviour).
    pub lr_zero_first_step: bool,
    /// Prompts per optimizer update (with all their samples); must divide `batch_prompts`.
    pub mini_batch_prompts: usize,
    /// Passes of PPO updates over each step's rollouts.
    pub ppo_epochs: usize,
    /// Sequences per forward/backward pass inside a mini-batch (gradient accumulation); 0: the
    /// whole mini-batch in one pass (its activations must fit in memory).
    pub micro_batch_seqs: usize,
    /// Tokens (prompt + response) per forward/backward pass instead, like verl's per-GPU token
    /// budget: sequences packed first-fit by decreasing length, a longer one alone; 0: off.
    /// Not with `micro_batch_seqs`.
    pub micro_batch_tokens: usize,
}

/// Where weights are written in Hugging Face format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    F32,
    Bf16,
}

/// Checkpointing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every this many steps (0: only at the end).
    pub every: usize,
    /// Keep the newest this many checkpoints (at least 1).
    pub keep_last: usize,
    /// `bf16` or `f32` for model.safetensors (the optimizer state is always f32).
    pub dtype: SaveDtype,
    /// Save AdamW's moments (needed to resume exactly; 2× the f32 model size).
    pub save_optimizer: bool,
}

/// Validation on a benchmark during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Validate every this many steps (0: never in between), after the last step, and before
    /// step 0 when `at_start`.
    pub every: usize,
    pub at_start: bool,
    /// Benchmark files (DeepScaleR test JSON, e.g. aime.json).
    pub benchmarks: Vec<PathBuf>,
    /// Samples per problem (pass@1 averaged over them).
    pub n: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// Keep only tokens with p ≥ min_p · p_max; 0.0 is off.
    pub min_p: f32,
    /// Response budget; absent: the current stage's.
    pub max_response_len: Option<usize>,
    /// Only the first k problems of each benchmark; absent: all.
    pub max_problems: Option<usize>,
}

/// One context-length stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// First step of this stage (0 for the first stage).
    pub from_step: usize,
    /// Response budget in tokens.
    pub max_response_len: usize,
    /// Samples per prompt.
    pub n: usize,
}

/// Automatic switch to the next stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoStage {
    /// Switch when the clip ratio (share of responses cut at the budget) exceeds this…
    pub clip_ratio_threshold: f64,
    /// …on each of the last `window` steps of the current stage.
    pub window: usize,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            model: PathBuf::new(),
            run_dir: PathBuf::from("runs/default"),
            seed: 42,
            total_steps: None,
            epochs: 1,
            device: Backend::Cpu,
            data: DataConfig::default(),
            rollout: RolloutConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            checkpoint: CheckpointConfig::default(),
            validation: None,
            stage: Vec::new(),
            auto_stage: None,
        }
    }
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            train: Vec::new(),
            shuffle: true,
            prompt_template: DEEPSCALER_PROMPT.to_string(),
            chat_template: ChatTemplate::R1Distill,
            max_prompt_len: 1024,
        }
    }
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            batch_prompts: 128,
            n: None,
            max_response_len: None,
            temperature: 0.6,
            top_p: 1.0,
            min_p: 0.0,
            device: None,
            max_kv_tokens: 1 << 20,
        }
    }
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            clip_ratio: 0.2,
            clip_ratio_high: None,
            clip_ratio_c: None,
            use_kl: true,
            kl_coef: 0.001,
            reference: RefPlacement::Device,
            entropy_coef: 0.001,
            loss_agg: AggKind::TokenMean,
            loss_agg_norm: None,
            norm_adv_by_std: true,
            adv_eps: 1e-6,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 1e-6,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            grad_clip: 1.0,
            warmup_steps: 0,
            lr_zero_first_step: false,
            mini_batch_prompts: 64,
            ppo_epochs: 1,
            micro_batch_seqs: 0,
            micro_batch_tokens: 0,
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every: 50, keep_last: 3, dtype: SaveDtype::Bf16, save_optimizer: true }
    }
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            every: 50,
            at_start: false,
            benchmarks: Vec::new(),
            n: 16,
            temperature: 0.6,
            top_p: 1.0,
            min_p: 0.0,
            max_response_len: None,
            max_problems: None,
        }
    }
}

fn positive(x: f32) -> bool {
    x.is_finite() && x > 0.0
}

fn non_negative(x: f32) -> bool {
    x.is_finite() && x >= 0.0
}

/// The default single stage (DeepScaleR's 8K stage).
pub const DEFAULT_STAGE: Stage = Stage { from_step: 0, max_response_len: 8192, n: 8 };

impl RunConfig {
    /// Reads and validates a config file; errors name the file (and the key at fault).
    pub fn load(path: &Path) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e:#}", path.display()))
    }

    /// Parses and validates TOML text (errors name the key, not the file).
    pub fn from_toml_str(text: &str) -> Result<RunConfig> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-key checks. Errors name the key.
    pub fn validate(&self) -> Result<()> {
        let d = &self.data;
        if !d.prompt_template.contains("{problem}") {
            bail!("data.prompt_template must contain `{{problem}}`");
        }
        if d.max_prompt_len == 0 {
            bail!("data.max_prompt_len must be positive");
        }
        let r = &self.rollout;
        if let Some(d) = &r.device {
            bail!(
                "rollout.device is now the top-level `device` key (the whole step runs there): write `device = {d:?}` \
                 above the tables"
            );
        }
        if r.batch_prompts == 0 {
            bail!("rollout.batch_prompts must be positive");
        }
        if !positive(r.temperature) {
            bail!("rollout.temperature must be > 0 (got {})", r.temperature);
        }
        if !(r.top_p > 0.0 && r.top_p <= 1.0) {
            bail!("rollout.top_p must be in (0, 1] (got {})", r.top_p);
        }
        if !(0.0..=1.0).contains(&r.min_p) {
            bail!("rollout.min_p must be in [0, 1] (got {})", r.min_p);
        }
        let l = &self.loss;
        if !(l.clip_ratio > 0.0 && l.clip_ratio < 1.0) {
            bail!("loss.clip_ratio must be in (0, 1) (got {})", l.clip_ratio);
        }
        if let Some(h) = l.clip_ratio_high {
            if !positive(h) {
                bail!("loss.clip_ratio_high must be > 0 (got {h})");
            }
        }
        if let Some(c) = l.clip_ratio_c {
            if !(c > 1.0) {
                bail!("loss.clip_ratio_c must be > 1 (got {c})");
            }
        }
        if !non_negative(l.kl_coef) || !non_negative(l.entropy_coef) {
            bail!("loss.kl_coef and loss.entropy_coef must be ≥ 0");
        }
        if let Some(c) = l.loss_agg_norm {
            if !positive(c) {
                bail!("loss.loss_agg_norm must be > 0 (got {c})");
            }
        }
        let o = &self.optim;
        if ![o.lr, o.weight_decay, o.grad_clip].into_iter().all(non_negative) {
            bail!("optim.lr, optim.weight_decay and optim.grad_clip must be ≥ 0");
        }
        if o.mini_batch_prompts == 0 || r.batch_prompts % o.mini_batch_prompts != 0 {
            bail!(
                "optim.mini_batch_prompts ({}) must divide rollout.batch_prompts ({})",
                o.mini_batch_prompts,
                r.batch_prompts
            );
        }
        if o.ppo_epochs == 0 {
            bail!("optim.ppo_epochs must be positive");
        }
        if o.micro_batch_seqs > 0 && o.micro_batch_tokens > 0 {
            bail!("optim.micro_batch_seqs and optim.micro_batch_tokens are two ways to cut a mini-batch: set one");
        }
        if self.checkpoint.keep_last == 0 {
            bail!("checkpoint.keep_last must be at least 1");
        }
        if self.total_steps.is_none() && self.epochs == 0 {
            bail!("epochs must be positive when total_steps is not given");
        }
        if let Some(v) = &self.validation {
            if v.every == 0 && !v.at_start {
                bail!("validation.every must be positive (or set validation.at_start)");
            }
            if v.benchmarks.is_empty() {
                bail!("validation.benchmarks is empty");
            }
            if v.n == 0 {
                bail!("validation.n must be positive");
            }
            if v.max_problems == Some(0) {
                bail!("validation.max_problems must be positive (or absent for all)");
            }
        }
        if !self.stage.is_empty() && (r.n.is_some() || r.max_response_len.is_some()) {
            bail!("rollout.n / rollout.max_response_len cannot be set together with [[stage]] (set them per stage)");
        }
        if r.n == Some(0) || r.max_response_len == Some(0) {
            bail!("rollout.n and rollout.max_response_len must be positive");
        }
        for (i, s) in self.stage.iter().enumerate() {
            if i == 0 && s.from_step != 0 {
                bail!("stage[0].from_step must be 0 (got {})", s.from_step);
            }
            if i > 0 && s.from_step <= self.stage[i - 1].from_step {
                bail!(
                    "stage[{i}].from_step ({}) must be greater than stage[{}].from_step ({})",
                    s.from_step,
                    i - 1,
                    self.stage[i - 1].from_step
                );
            }
            if s.n == 0 || s.max_response_len == 0 {
                bail!("stage[{i}]: n and max_response_len must be positive");
            }
        }
        if let Some(a) = &self.auto_stage {
            if a.window == 0 {
                bail!("auto_stage.window must be positive");
            }
            if !(0.0..=1.0).contains(&a.clip_ratio_threshold) {
                bail!("auto_stage.clip_ratio_threshold must be in [0, 1] (got {})", a.clip_ratio_threshold);
            }
        }
        if let Some(kv) = r.kv_budget() {
            // One sequence of the longest budget must fit, in whole blocks of the engine's 16.
            let stage_max = self.stages().iter().map(|s| s.max_response_len).max().unwrap_or(0);
            let response = self.validation.as_ref().and_then(|v| v.max_response_len).unwrap_or(0).max(stage_max);
            let longest = d.max_prompt_len + response;
            let block = GenerateOptions::default().block_size;
            if kv < longest.next_multiple_of(block) {
                bail!(
                    "rollout.max_kv_tokens ({kv}) cannot hold one sequence: data.max_prompt_len ({}) + the longest \
                     response budget ({response}) needs {} tokens (or 0 for no bound)",
                    d.max_prompt_len,
                    longest.next_multiple_of(block)
                );
            }
        }
        Ok(())
    }

    /// The stages in order (one implicit stage when `[[stage]]` is absent).
    pub fn stages(&self) -> Vec<Stage> {
        if self.stage.is_empty() {
            vec![Stage {
                from_step: 0,
                max_response_len: self.rollout.max_response_len.unwrap_or(DEFAULT_STAGE.max_response_len),
                n: self.rollout.n.unwrap_or(DEFAULT_STAGE.n),
            }]
        } else {
            self.stage.clone()
        }
    }

    /// Index of the stage that step `step` (0-based) runs in. `clip_history[s]` is the clip
    /// ratio (share of responses cut at the budget) of step s; entries past `step` are ignored
    /// and missing ones count as below the threshold.
    ///
    /// Fixed schedule: the last stage whose `from_step` ≤ step. With `[auto_stage]`, a stage also
    /// begins early at step s when each of the `window` steps before s ran in the stage before it
    /// with a clip ratio above the threshold. A stage is never left for an earlier one.
    pub fn stage_index_at(&self, step: usize, clip_history: &[f64]) -> usize {
        let stages = self.stages();
        let scheduled = |s: usize| stages.iter().rposition(|st| st.from_step <= s).unwrap_or(0);
        let Some(auto) = self.auto_stage else {
            return scheduled(step);
        };
        let mut cur = 0usize;
        let mut run = 0usize; // consecutive steps above threshold within `cur`
        for s in 0..=step {
            let sched = scheduled(s);
            if sched > cur {
                cur = sched;
                run = 0;
            } else if run >= auto.window && cur + 1 < stages.len() {
                cur += 1;
                run = 0;
            }
            if s == step {
                break;
            }
            let above = clip_history.get(s).is_some_and(|&c| c > auto.clip_ratio_threshold);
            run = if above { run + 1 } else { 0 };
        }
        cur
    }

    /// The stage that step `step` runs in (see `stage_index_at`).
    pub fn stage_at(&self, step: usize, clip_history: &[f64]) -> Stage {
        self.stages()[self.stage_index_at(step, clip_history)]
    }

    pub fn chat_template(&self) -> ChatTemplate {
        self.data.chat_template
    }

    /// The user message for a problem.
    pub fn render_prompt(&self, problem: &str) -> String {
        crate::eval::render_prompt(&self.data.prompt_template, problem)
    }

    /// The loss aggregation; `max_response_len` is the Dr. GRPO constant's default.
    pub fn loss_agg(&self, max_response_len: usize) -> LossAgg {
        match self.loss.loss_agg {
            AggKind::TokenMean => LossAgg::TokenMean,
            AggKind::SeqMeanTokenMean => LossAgg::SeqMeanTokenMean,
            AggKind::SeqMeanTokenSum => LossAgg::SeqMeanTokenSum,
            AggKind::SeqMeanTokenSumNorm => {
                LossAgg::SeqMeanTokenSumNorm { constant: self.loss.loss_agg_norm.unwrap_or(max_response_len as f32) }
            }
        }
    }

    /// The GRPO loss settings for a stage.
    pub fn grpo(&self, stage: &Stage) -> GrpoConfig {
        let l = &self.loss;
        GrpoConfig {
            clip_low: l.clip_ratio,
            clip_high: l.clip_ratio_high.unwrap_or(l.clip_ratio),
            dual_clip: l.clip_ratio_c,
            entropy_coef: l.entropy_coef,
            kl_coef: l.use_kl.then_some(l.kl_coef),
            agg: self.loss_agg(stage.max_response_len),
        }
    }

    /// How a mini-batch is cut into forward/backward passes.
    pub fn micro_batch(&self) -> MicroBatch {
        match (self.optim.micro_batch_tokens, self.optim.micro_batch_seqs) {
            (0, 0) => MicroBatch::Whole,
            (0, k) => MicroBatch::Seqs(k),
            (t, _) => MicroBatch::Tokens(t),
        }
    }

    /// The optimizer settings.
    pub fn adamw(&self) -> AdamWConfig {
        let o = &self.optim;
        AdamWConfig {
            schedule: LrSchedule { lr: o.lr, warmup_steps: o.warmup_steps, zero_first_step: o.lr_zero_first_step },
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            weight_decay: o.weight_decay,
            max_grad_norm: (o.grad_clip > 0.0).then_some(o.grad_clip),
        }
    }
}

/// `loss.loss_agg`: how per-token losses become the batch's loss (see `grpo::LossAgg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    TokenMean,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
}

impl std::str::FromStr for AggKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "token-mean" => AggKind::TokenMean,
            "seq-mean-token-mean" => AggKind::SeqMeanTokenMean,
            "seq-mean-token-sum" => AggKind::SeqMeanTokenSum,
            "seq-mean-token-sum-norm" => AggKind::SeqMeanTokenSumNorm,
            other => bail!("unknown `{other}` (expected token-mean, seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm)"),
        })
    }
}

impl std::fmt::Display for AggKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AggKind::TokenMean => "token-mean",
            AggKind::SeqMeanTokenMean => "seq-mean-token-mean",
            AggKind::SeqMeanTokenSum => "seq-mean-token-sum",
            AggKind::SeqMeanTokenSumNorm => "seq-mean-token-sum-norm",
        })
    }
}

/// `loss.reference`: where the frozen reference model's weights live between its passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefPlacement {
    Device,
    Host,
}

impl std::str::FromStr for RefPlacement {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "device" => RefPlacement::Device,
            "host" => RefPlacement::Host,
            other => bail!("unknown `{other}` (expected device or host)"),
        })
    }
}

impl std::fmt::Display for RefPlacement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefPlacement::Device => "device",
            RefPlacement::Host => "host",
        })
    }
}

/// Keys whose TOML string becomes an enum at load, with errors that name the key (serde alone
/// would name only the line).
mod keyed {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    fn parse<'de, D: Deserializer<'de>, T: FromStr<Err = anyhow::Error>>(d: D, key: &str) -> Result<T, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|e| serde::de::Error::custom(format!("{key}: {e:#}")))
    }

    pub fn device<'de, D: Deserializer<'de>>(d: D) -> Result<crate::engine::Backend, D::Error> {
        parse(d, "device")
    }

    pub fn chat_template<'de, D: Deserializer<'de>>(d: D) -> Result<crate::model::ChatTemplate, D::Error> {
        parse(d, "data.chat_template")
    }

    pub fn loss_agg<'de, D: Deserializer<'de>>(d: D) -> Result<super::AggKind, D::Error> {
        parse(d, "loss.loss_agg")
    }

    pub fn reference<'de, D: Deserializer<'de>>(d: D) -> Result<super::RefPlacement, D::Error> {
        parse(d, "loss.reference")
    }

    pub fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
}
