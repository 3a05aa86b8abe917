//! Phase 1 of a GRPO step: roll out `n` responses per prompt with the engine at the stage's
//! budget and grade them with the math reward (in parallel). A response cut at the budget is
//! wrong whatever it holds, as in DeepScaleR. Every sample is seeded from (seed, step, prompt in
//! batch, sample), so a resumed run draws the same rollouts as an uninterrupted one.
//!
//! A run can also record each step's graded rollouts (`record`, `ROLLOUTS_FILE`) and another run
//! replay them instead of sampling (`Replay`): the seam that feeds two devices the same rollouts,
//! so that their updates can be compared on their own (sampling from bf16 and f32 weights soon
//! draws different tokens, after which two runs have nothing left to compare).

use super::grpo::grpo_advantages;
use super::metrics::PhaseTime;
use super::step::Sample;
use crate::engine::{generate, Completion, FinishReason, GenerateOptions, Request, SamplingParams, StepModel};
use crate::util::hash_parts;
use crate::model::TextTokenizer;
use crate::reward::{grade_batch, Gold, RewardConfig};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The sampling seed of one rollout: a hash of (seed, step, prompt in batch, sample).
pub fn rollout_seed(seed: u64, step: usize, prompt: usize, sample: usize) -> u64 {
    hash_parts(seed ^ 0x7261_696E_5EED_0000, &[step as u64, prompt as u64, sample as u64])
}

/// How one step samples.
pub struct RolloutParams<'a> {
    pub seed: u64,
    pub step: usize,
    /// The batch index of `prompts[0]` (a rank's share starts there), so that a prompt's samples
    /// are seeded by its place in the whole batch, whichever rank rolls it out.
    pub first_prompt: usize,
    /// Samples per prompt.
    pub n: usize,
    pub max_response_len: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// Keep tokens with p ≥ min_p · p_max (0 = off).
    pub min_p: f32,
    pub stop_token_ids: &'a [u32],
    /// KV cache capacity in tokens (`None`: the whole batch at once).
    pub max_kv_tokens: Option<usize>,
}

/// The graded responses of one step, sample `i` answering prompt `i / n`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rollouts {
    /// Prompt + response tokens (generation stops at the first EOS, which is kept).
    pub seqs: Vec<Vec<u32>>,
    pub prompt_lens: Vec<usize>,
    /// Per sample, the log-prob the sampler gave each response token (at the temperature).
    pub logprobs: Vec<Vec<f32>>,
    pub rewards: Vec<f32>,
    pub correct: Vec<bool>,
    /// Cut at the budget (no EOS within it).
    pub cut: Vec<bool>,
    /// Timings are not recorded: a replayed step took none.
    #[serde(skip)]
    pub rollout_time: PhaseTime,
    #[serde(skip)]
    pub verify_time: PhaseTime,
}

impl Rollouts {
    pub fn response_len(&self, i: usize) -> usize {
        self.seqs[i].len() - self.prompt_lens[i]
    }

    /// Sample `i` as the trainer scores it: its own tokens, its prompt's length.
    pub fn samples(&self) -> Vec<Sample<'_>> {
        self.seqs.iter().zip(&self.prompt_lens).map(|(s, &p)| Sample { tokens: s, prompt_len: p }).collect()
    }

    /// GRPO's advantage of every sample: its reward against its own group's (the `n` samples of
    /// its prompt, `i / n`) mean, over the group's std when `norm_by_std`.
    pub fn advantages(&self, n: usize, norm_by_std: bool, eps: f32) -> Vec<f32> {
        let groups: Vec<usize> = (0..self.rewards.len()).map(|i| i / n).collect();
        grpo_advantages(&self.rewards, &groups, norm_by_std, eps)
    }

    /// Groups whose samples all got the same reward (no learning signal).
    pub fn zero_variance_groups(&self, n: usize) -> usize {
        self.rewards.chunks(n).filter(|g| g.iter().all(|&r| r == g[0])).count()
    }
}

/// Samples `p.n` responses to each prompt and grades them against its gold answer.
pub fn roll_out<M: StepModel>(
    model: &M,
    tokenizer: &TextTokenizer,
    prompts: &[(&[u32], &Gold)],
    p: &RolloutParams,
    reward: &RewardConfig,
) -> Result<Rollouts> {
    let t = Instant::now();
    let mut requests = Vec::with_capacity(prompts.len() * p.n);
    for (pi, (tokens, _)) in prompts.iter().enumerate() {
        for si in 0..p.n {
            requests.push(Request {
                prompt: tokens.to_vec(),
                params: SamplingParams {
                    temperature: p.temperature,
                    top_p: p.top_p,
                    top_k: 0,
                    min_p: p.min_p,
                    seed: rollout_seed(p.seed, p.step, p.first_prompt + pi, si),
                    max_new_tokens: p.max_response_len,
                    stop_token_ids: p.stop_token_ids.to_vec(),
                },
            });
        }
    }
    let opts = GenerateOptions { max_kv_tokens: p.max_kv_tokens, ..GenerateOptions::default() };
    let completions = generate(model, &requests, &opts, |_, _, _| {})?;
    let gen_tokens: u64 = completions.iter().map(|c| c.tokens.len() as u64).sum();
    let rollout_time = PhaseTime::new(t.elapsed().as_secs_f64(), gen_tokens);

    let t = Instant::now();
    let mut ro = grade(prompts, p.n, completions, tokenizer, reward)?;
    ro.rollout_time = rollout_time;
    ro.verify_time = PhaseTime::new(t.elapsed().as_secs_f64(), 0);
    Ok(ro)
}

/// Grades `completions[i]` (the response to prompt `i / n`) against that prompt's gold: a
/// response cut at the budget is wrong. Sample `i` of the result is completion `i` after its
/// prompt. (Timings are left at zero.)
pub fn grade(
    prompts: &[(&[u32], &Gold)],
    n: usize,
    completions: Vec<Completion>,
    tokenizer: &TextTokenizer,
    reward: &RewardConfig,
) -> Result<Rollouts> {
    ensure!(completions.len() == prompts.len() * n, "{} completions for {} prompts × {n}", completions.len(), prompts.len());
    let texts: Vec<String> = completions.iter().map(|c| tokenizer.decode(&c.tokens, true)).collect::<Result<_>>()?;
    let items: Vec<(&str, &Gold)> = texts.iter().enumerate().map(|(i, s)| (s.as_str(), prompts[i / n].1)).collect();
    let grades = grade_batch(&items, reward);
    let cut: Vec<bool> = completions.iter().map(|c| c.finish == FinishReason::Length).collect();
    let rewards: Vec<f32> = grades.iter().zip(&cut).map(|(g, &cut)| if cut { reward.wrong_reward } else { g.reward }).collect();
    let correct = rewards.iter().map(|&r| r == reward.correct_reward).collect();
    let prompt_lens = (0..completions.len()).map(|i| prompts[i / n].0.len()).collect();
    let logprobs = completions.iter().map(|c| c.logprobs.clone()).collect();
    let seqs = completions.into_iter().enumerate().map(|(i, c)| [prompts[i / n].0, &c.tokens].concat()).collect();
    let zero = PhaseTime::new(0.0, 0);
    Ok(Rollouts { seqs, prompt_lens, logprobs, rewards, correct, cut, rollout_time: zero, verify_time: zero })
}

/// The file in a run directory that `record` appends to: one JSON line per step,
/// `{"step": N, "rollouts": {...}}`.
pub const ROLLOUTS_FILE: &str = "rollouts.jsonl";

#[derive(Serialize, Deserialize)]
struct RolloutRecord<R> {
    step: usize,
    rollouts: R,
}

/// Appends step `step`'s rollouts to `run_dir/ROLLOUTS_FILE`.
pub fn record(run_dir: &Path, step: usize, ro: &Rollouts) -> Result<()> {
    let path = run_dir.join(ROLLOUTS_FILE);
    let mut line = serde_json::to_string(&RolloutRecord { step, rollouts: ro })?;
    line.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .with_context(|| format!("cannot append to {}", path.display()))
}

/// Rollouts recorded by another run (`record`), handed out step by step instead of sampling.
pub struct Replay {
    path: PathBuf,
    steps: HashMap<usize, Rollouts>,
}

impl Replay {
    /// Loads `run_dir/ROLLOUTS_FILE`. A step recorded twice (a run resumed after a kill redoes
    /// the steps after its checkpoint) keeps its last record: rollouts are deterministic, so the
    /// two are the same.
    pub fn load(run_dir: &Path) -> Result<Replay> {
        let path = run_dir.join(ROLLOUTS_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read recorded rollouts {}", path.display()))?;
        let mut steps = HashMap::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: RolloutRecord<Rollouts> = serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), i + 1))?;
            steps.insert(r.step, r.rollouts);
        }
        Ok(Replay { path, steps })
    }

    /// Step `step`'s recorded rollouts, checked against what this run would sample: `n`
    /// responses to each of `prompts`, in order, within `max_response_len` tokens.
    pub fn take(&mut self, step: usize, prompts: &[(&[u32], &Gold)], n: usize, max_response_len: usize) -> Result<Rollouts> {
        let Some(ro) = self.steps.remove(&step) else {
            bail!("{}: no rollouts recorded for step {step}", self.path.display());
        };
        let fits = ro.seqs.len() == prompts.len() * n
            && [ro.prompt_lens.len(), ro.logprobs.len(), ro.rewards.len(), ro.correct.len(), ro.cut.len()].iter().all(|&l| l == ro.seqs.len())
            && ro.seqs.iter().enumerate().all(|(i, s)| {
                let (p, len) = (prompts[i / n].0, ro.prompt_lens[i]);
                len == p.len() && s.starts_with(p) && s.len() - len <= max_response_len && ro.logprobs[i].len() == s.len() - len
            });
        if !fits {
            bail!(
                "{}: the rollouts of step {step} were not sampled for this step's {} prompts × {n} at a budget of {max_response_len} tokens (another config, data set or seed?)",
                self.path.display(),
                prompts.len()
            );
        }
        let tokens = ro.seqs.iter().zip(&ro.prompt_lens).map(|(s, &p)| (s.len() - p) as u64).sum();
        Ok(Rollouts { rollout_time: PhaseTime::new(0.0, tokens), ..ro })
    }
}
