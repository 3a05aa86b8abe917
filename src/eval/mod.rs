//! Evaluation on DeepScaleR's test sets (AIME, AMC, MATH-500, Minerva, OlympiadBench): n samples
//! per problem, graded with the math reward, summarised as pass@1, pass@n, response lengths and
//! the share cut at the budget.
//!
//! [`evaluate`] is the pure library call (the trainer's periodic validation); [`evaluate_resumable`]
//! adds the hooks the `scalerl eval` command uses to stream samples to a JSONL file and resume an
//! interrupted run from it ([`output`]).
//!
//! Sampling: every sample gets its own seed derived from (seed, benchmark, problem, sample), so
//! results do not depend on how problems are batched nor on resuming.
pub mod data;
pub mod metrics;
pub mod output;

pub use data::{Benchmark, Problem};
pub use metrics::{format_table, summarize, to_csv, BenchmarkResult, SampleRecord};

use crate::engine::{generate, FinishReason, GenerateOptions, Request, SamplingParams, StepModel};
use crate::model::{ChatTemplate, TextTokenizer};
use crate::reward::{grade, Gold, RewardConfig};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::time::Instant;

/// The DeepScaleR prompt (the same in training and evaluation): `{problem}` is replaced by the
/// problem text, and the result is rendered as one user turn of the chat template.
pub const DEEPSCALER_PROMPT_TEMPLATE: &str =
    "{problem} Let's think step by step and output the final answer within \\boxed{}.";

/// The user message for a problem: [`DEEPSCALER_PROMPT_TEMPLATE`] filled in.
pub fn deepscaler_prompt(problem: &str) -> String {
    render_prompt(DEEPSCALER_PROMPT_TEMPLATE, problem)
}

/// The user message: `template` with every `{problem}` replaced (training renders its prompts
/// with this too, so validation sees the same text).
pub fn render_prompt(template: &str, problem: &str) -> String {
    template.replace("{problem}", problem)
}

/// The chat template a model gets by default: its own if it has one, else the built-in R1-Distill.
pub fn default_chat_template(tok: &TextTokenizer) -> ChatTemplate {
    if tok.chat_template.is_some() {
        ChatTemplate::Model
    } else {
        ChatTemplate::R1Distill
    }
}

/// What [`evaluate`] does.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Samples per problem.
    pub n: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// 0 = off.
    pub top_k: usize,
    /// Keep tokens with p ≥ min_p · p_max (0 = off).
    pub min_p: f32,
    /// The response budget (tokens); a response cut there counts as wrong. Clamped to what the
    /// model's context leaves after the prompt.
    pub max_response_len: usize,
    pub seed: u64,
    /// The user message, `{problem}` replaced by the problem text (DeepScaleR's by default;
    /// the trainer's validation passes its own training template).
    pub prompt_template: String,
    pub chat_template: ChatTemplate,
    /// Generation ends at any of these (the model's EOS ids).
    pub stop_token_ids: Vec<u32>,
    pub reward: RewardConfig,
    /// Most sequences in one `generate` call (whole problems are batched: at least one problem
    /// with its n samples goes in each call).
    pub max_batch_sequences: usize,
    pub generate: GenerateOptions,
    /// Only the first k problems of each benchmark (None = all).
    pub max_problems: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            n: 16,
            temperature: 0.6,
            top_p: 0.95,
            top_k: 0,
            min_p: 0.0,
            max_response_len: 32768,
            seed: 0,
            prompt_template: DEEPSCALER_PROMPT_TEMPLATE.to_string(),
            chat_template: ChatTemplate::R1Distill,
            stop_token_ids: vec![],
            reward: RewardConfig::default(),
            max_batch_sequences: 32,
            generate: GenerateOptions::default(),
            max_problems: None,
        }
    }
}

/// One problem's prompt as `evaluate` renders it.
pub struct ProblemPrompt {
    /// Index into the benchmarks, and of the problem in its benchmark.
    pub bench: usize,
    pub index: usize,
    /// The rendered chat text, and its tokens.
    pub text: String,
    pub tokens: Vec<u32>,
}

/// The prompts of the problems `opts` evaluates (its templates and `max_problems`), each checked
/// to leave room for a response in `context` tokens.
pub fn problem_prompts(
    benchmarks: &[Benchmark],
    tokenizer: &TextTokenizer,
    opts: &EvalOptions,
    context: usize,
) -> Result<Vec<ProblemPrompt>> {
    let mut out = Vec::new();
    for (bi, b) in benchmarks.iter().enumerate() {
        let count = opts.max_problems.map_or(b.problems.len(), |k| k.min(b.problems.len()));
        for (pi, p) in b.problems[..count].iter().enumerate() {
            let text = opts
                .chat_template
                .render_user_turn(tokenizer, &render_prompt(&opts.prompt_template, &p.problem))
                .with_context(|| format!("{}: problem {pi}", b.name))?;
            let tokens = tokenizer.encode(&text, false)?;
            if tokens.len() >= context {
                bail!(
                    "{}: problem {pi}: the prompt ({} tokens) leaves no room for a response in the context of {context} tokens",
                    b.name,
                    tokens.len()
                );
            }
            out.push(ProblemPrompt { bench: bi, index: pi, text, tokens });
        }
    }
    Ok(out)
}

/// Progress after each finished problem.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Problems finished (resumed ones included) out of all.
    pub problems_done: usize,
    pub problems_total: usize,
    /// Samples generated by this run.
    pub samples_generated: usize,
    pub elapsed_s: f64,
    /// Samples generated per second by this run.
    pub samples_per_s: f64,
    /// pass@1 over every finished sample so far (resumed ones included).
    pub running_pass_at_1: f64,
}

/// Grades one response: (reward, reason, extracted answer). A response cut at the budget
/// (`finish` = length) is wrong with reason `cut`, whatever it holds; otherwise the math reward
/// decides (`</think>` required by default).
pub fn grade_response(
    response: &str,
    gold: &Gold,
    finish: FinishReason,
    cfg: &RewardConfig,
) -> (f32, String, Option<String>) {
    let g = grade(response, gold, cfg);
    if finish == FinishReason::Length {
        (cfg.wrong_reward, "cut".to_string(), g.answer)
    } else {
        (g.reward, g.reason.as_str().to_string(), g.answer)
    }
}

/// The seed of one sample: a hash of (seed, benchmark, problem, sample), independent of batching.
pub fn sample_seed(seed: u64, benchmark: &str, problem: usize, sample: usize) -> u64 {
    // FNV-1a of the name, then the SplitMix64 finaliser over each part.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in benchmark.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    crate::util::hash_parts(seed, &[h, problem as u64, sample as u64])
}

/// Samples and grades every problem of every benchmark; returns one result per benchmark (in
/// order). No printing; `on_progress` is called after each finished problem.
pub fn evaluate<M: StepModel>(
    model: &M,
    tokenizer: &TextTokenizer,
    benchmarks: &[Benchmark],
    opts: &EvalOptions,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Vec<BenchmarkResult>> {
    let (results, _) = evaluate_resumable(model, tokenizer, benchmarks, opts, Vec::new(), |p, _| {
        on_progress(p);
        Ok(())
    })?;
    Ok(results)
}

/// [`evaluate`] with resume: `previous` holds samples of finished problems (a problem whose n
/// samples are all there, with the same prompt, is not generated again; other samples are
/// dropped), and `on_problem` gets each newly finished problem's samples (to append them to a
/// file) with the progress. Returns the results and every sample, in (benchmark, problem,
/// sample) order.
pub fn evaluate_resumable<M: StepModel>(
    model: &M,
    tokenizer: &TextTokenizer,
    benchmarks: &[Benchmark],
    opts: &EvalOptions,
    previous: Vec<SampleRecord>,
    mut on_problem: impl FnMut(&Progress, &[SampleRecord]) -> Result<()>,
) -> Result<(Vec<BenchmarkResult>, Vec<SampleRecord>)> {
    if opts.n == 0 {
        bail!("n (samples per problem) must be at least 1");
    }
    if opts.max_response_len == 0 {
        bail!("the response budget must be at least 1 token");
    }
    let mut names = HashSet::new();
    for b in benchmarks {
        if !names.insert(b.name.as_str()) {
            bail!("two benchmarks are named `{}` (benchmarks are named after their file stems)", b.name);
        }
    }
    let context = opts.generate.max_context.unwrap_or(model.config().max_position_embeddings);

    // Prompts, and which problems are already finished.
    struct Item<'a> {
        bench: usize,
        index: usize,
        problem: &'a Problem,
        prompt_text: String,
        prompt: Vec<u32>,
    }
    let items: Vec<Item> = problem_prompts(benchmarks, tokenizer, opts, context)?
        .into_iter()
        .map(|p| Item {
            bench: p.bench,
            index: p.index,
            problem: &benchmarks[p.bench].problems[p.index],
            prompt_text: p.text,
            prompt: p.tokens,
        })
        .collect();
    let mut done: Vec<Option<Vec<SampleRecord>>> = vec![None; items.len()];
    {
        let mut by_key: std::collections::HashMap<(&str, usize), Vec<SampleRecord>> = Default::default();
        for r in previous {
            if r.sample_index < opts.n {
                let Some(b) = benchmarks.iter().find(|b| b.name == r.benchmark) else { continue };
                by_key.entry((b.name.as_str(), r.problem_index)).or_default().push(r);
            }
        }
        for (k, it) in items.iter().enumerate() {
            let Some(mut recs) = by_key.remove(&(benchmarks[it.bench].name.as_str(), it.index)) else { continue };
            recs.sort_by_key(|r| r.sample_index);
            recs.dedup_by_key(|r| r.sample_index);
            if recs.len() == opts.n && recs.iter().all(|r| r.prompt == it.prompt_text) {
                done[k] = Some(recs);
            }
        }
    }

    let total = items.len();
    let started = Instant::now();
    let mut generated = 0usize;
    let (mut correct, mut graded) = (0usize, 0usize);
    for recs in done.iter().flatten() {
        graded += recs.len();
        correct += recs.iter().filter(|r| r.is_correct()).count();
    }
    let mut problems_done = done.iter().filter(|d| d.is_some()).count();

    let pending: Vec<usize> = (0..total).filter(|&k| done[k].is_none()).collect();
    let per_call = (opts.max_batch_sequences / opts.n).max(1);
    for group in pending.chunks(per_call) {
        let mut requests = Vec::with_capacity(group.len() * opts.n);
        for &k in group {
            let it = &items[k];
            let budget = opts.max_response_len.min(context - it.prompt.len());
            for s in 0..opts.n {
                requests.push(Request {
                    prompt: it.prompt.clone(),
                    params: SamplingParams {
                        temperature: opts.temperature,
                        top_p: opts.top_p,
                        top_k: opts.top_k,
                        min_p: opts.min_p,
                        seed: sample_seed(opts.seed, &benchmarks[it.bench].name, it.index, s),
                        max_new_tokens: budget,
                        stop_token_ids: opts.stop_token_ids.clone(),
                    },
                });
            }
        }
        let completions = generate(model, &requests, &opts.generate, |_, _, _| {})?;
        generated += completions.len();
        for (g, &k) in group.iter().enumerate() {
            let it = &items[k];
            let mut recs = Vec::with_capacity(opts.n);
            for s in 0..opts.n {
                let c = &completions[g * opts.n + s];
                let response = tokenizer.decode(&c.tokens, true)?;
                let (reward, reason, answer) = grade_response(&response, &it.problem.gold, c.finish, &opts.reward);
                recs.push(SampleRecord {
                    benchmark: benchmarks[it.bench].name.clone(),
                    problem_index: it.index,
                    sample_index: s,
                    prompt: it.prompt_text.clone(),
                    response,
                    answer,
                    reward,
                    reason,
                    tokens: c.tokens.len(),
                    finish: c.finish.as_str().to_string(),
                });
            }
            graded += recs.len();
            correct += recs.iter().filter(|r| r.is_correct()).count();
            problems_done += 1;
            let elapsed_s = started.elapsed().as_secs_f64();
            let progress = Progress {
                problems_done,
                problems_total: total,
                samples_generated: generated,
                elapsed_s,
                samples_per_s: if elapsed_s > 0.0 { generated as f64 / elapsed_s } else { 0.0 },
                running_pass_at_1: if graded == 0 { 0.0 } else { correct as f64 / graded as f64 },
            };
            on_problem(&progress, &recs)?;
            done[k] = Some(recs);
        }
    }

    let all: Vec<SampleRecord> = done.into_iter().flatten().flatten().collect();
    let results = benchmarks.iter().map(|b| summarize(&b.name, &all)).collect();
    Ok((results, all))
}

/// The samples of finished problems among `previous`: those whose samples 0..n are all there
/// (duplicates dropped), in (benchmark, problem, sample) order of appearance.
pub fn finished_samples(previous: Vec<SampleRecord>, n: usize) -> Vec<SampleRecord> {
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut groups: std::collections::HashMap<(String, usize), Vec<SampleRecord>> = Default::default();
    for r in previous {
        if r.sample_index >= n {
            continue;
        }
        let key = (r.benchmark.clone(), r.problem_index);
        let g = groups.entry(key.clone()).or_default();
        if g.is_empty() {
            order.push(key);
        }
        if !g.iter().any(|x| x.sample_index == r.sample_index) {
            g.push(r);
        }
    }
    let mut out = Vec::new();
    for key in order {
        let mut g = groups.remove(&key).unwrap_or_default();
        if g.len() == n {
            g.sort_by_key(|r| r.sample_index);
            out.extend(g);
        }
    }
    out
}
