//! Validation during training (`[validation]`, verl's `test_freq` / `val_before_train`): pass@1
//! averaged over `n` samples per problem on each benchmark, with `eval::evaluate` on the current
//! weights, the training prompt and chat templates, and a response cut at the budget counted
//! wrong. Every sample is seeded from (seed, benchmark, problem, sample), so two validations of
//! the same weights agree and a resumed run validates as an uninterrupted one. The benchmarks
//! are loaded, and their prompts checked against the context and the KV budget
//! ([`Validator::check`]), before the run starts, so a bad file or an overlong prompt fails
//! before any work.

use super::config::{RunConfig, ValidationConfig};
use super::metrics::ValidationMetrics;
use crate::engine::{GenerateOptions, StepModel};
use crate::eval::{self, Benchmark, EvalOptions};
use crate::model::TextTokenizer;
use crate::reward::RewardConfig;
use anyhow::{bail, Context, Result};
use std::time::Instant;

/// The validation of one run: its settings and benchmarks.
pub struct Validator {
    cfg: ValidationConfig,
    benchmarks: Vec<Benchmark>,
    seed: u64,
    prompt_template: String,
    chat_template: crate::model::chat::ChatTemplate,
    /// The rollouts' KV cache capacity (`rollout.max_kv_tokens`).
    max_kv_tokens: Option<usize>,
}

impl Validator {
    /// `None` when the config has no `[validation]`.
    pub fn load(run: &RunConfig) -> Result<Option<Validator>> {
        let Some(cfg) = run.validation.clone() else { return Ok(None) };
        let benchmarks = cfg
            .benchmarks
            .iter()
            .map(|p| Benchmark::load(p).context("validation.benchmarks"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Validator {
            cfg,
            benchmarks,
            seed: run.seed,
            prompt_template: run.data.prompt_template.clone(),
            chat_template: run.chat_template(),
            max_kv_tokens: run.rollout.kv_budget(),
        }))
    }

    /// Validate before the first update?
    pub fn at_start(&self) -> bool {
        self.cfg.at_start
    }

    /// Validate after `steps_done` of the run's `total_steps` steps? Every `every` steps, and
    /// after the last one.
    pub fn due_after(&self, steps_done: usize, total_steps: usize) -> bool {
        steps_done == total_steps || (self.cfg.every > 0 && steps_done % self.cfg.every == 0)
    }

    /// The evaluation settings: the config's budget or else `stage_budget`.
    fn options(&self, stop_token_ids: &[u32], stage_budget: usize) -> EvalOptions {
        EvalOptions {
            n: self.cfg.n,
            temperature: self.cfg.temperature,
            top_p: self.cfg.top_p,
            top_k: 0,
            min_p: self.cfg.min_p,
            max_response_len: self.cfg.max_response_len.unwrap_or(stage_budget),
            seed: self.seed,
            prompt_template: self.prompt_template.clone(),
            chat_template: self.chat_template,
            stop_token_ids: stop_token_ids.to_vec(),
            reward: RewardConfig::default(),
            // One generate call: the KV budget (rollout.max_kv_tokens) bounds what runs at once.
            max_batch_sequences: usize::MAX,
            generate: GenerateOptions { max_kv_tokens: self.max_kv_tokens, ..GenerateOptions::default() },
            max_problems: self.cfg.max_problems,
        }
    }

    /// Checks, before any work, that every validation prompt leaves room for a response in the
    /// model's `context` and that, with the longest budget validation will use
    /// (`longest_stage_budget` unless the config sets one), it fits the KV budget.
    pub fn check(&self, tokenizer: &TextTokenizer, context: usize, longest_stage_budget: usize) -> Result<()> {
        let opts = self.options(&[], longest_stage_budget);
        let prompts = eval::problem_prompts(&self.benchmarks, tokenizer, &opts, context).context("validation")?;
        let Some(kv) = self.max_kv_tokens else { return Ok(()) };
        let block = opts.generate.block_size;
        for p in prompts {
            let budget = opts.max_response_len.min(context - p.tokens.len());
            let need = (p.tokens.len() + budget).next_multiple_of(block);
            if need > kv {
                bail!(
                    "validation: {}: problem {}: the prompt ({} tokens) + the response budget ({budget}) need {need} \
                     tokens of KV cache; rollout.max_kv_tokens is {kv}",
                    self.benchmarks[p.bench].name,
                    p.index,
                    p.tokens.len()
                );
            }
        }
        Ok(())
    }

    /// pass@1 on every benchmark, `steps_done` updates into the run; the budget is the config's
    /// or else `stage_budget`.
    pub fn run<M: StepModel>(
        &self,
        model: &M,
        tokenizer: &TextTokenizer,
        stop_token_ids: &[u32],
        stage_budget: usize,
        steps_done: usize,
    ) -> Result<Vec<ValidationMetrics>> {
        let opts = self.options(stop_token_ids, stage_budget);
        let mut out = Vec::with_capacity(self.benchmarks.len());
        for b in &self.benchmarks {
            let t = Instant::now();
            let r = eval::evaluate(model, tokenizer, std::slice::from_ref(b), &opts, |_| {})
                .with_context(|| format!("validation on {}", b.name))?;
            let r = &r[0];
            let lens = [r.mean_len_correct.map(|l| (l, r.pass_at_1)), r.mean_len_incorrect.map(|l| (l, 1.0 - r.pass_at_1))];
            out.push(ValidationMetrics {
                benchmark: b.name.clone(),
                after_steps: steps_done,
                pass_at_1: r.pass_at_1,
                n: r.n,
                response_len_mean: lens.iter().flatten().map(|(l, w)| l * w).sum(),
                clip_ratio: r.cut_share,
                secs: t.elapsed().as_secs_f64(),
            });
        }
        Ok(out)
    }
}
