//! Phase 1 of a GRPO step: roll out `n` responses per prompt with the engine at the stage's
//! budget and grade them with the math reward (in parallel). A response cut at the budget is
//! wrong whatever it holds, as in DeepScaleR. Every sample is seeded from (seed, step, prompt in
//! batch, sample), so a resumed run draws the same rollouts as an uninterrupted one.

use super::metrics::PhaseTime;
use crate::engine::{generate, FinishReason, GenerateOptions, Request, SamplingParams, StepModel};
use crate::model::TextTokenizer;
use crate::reward::{grade_batch, Gold, RewardConfig};
use anyhow::Result;
use std::time::Instant;

/// SplitMix64 finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
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

/// How one step samples.
pub struct RolloutParams<'a> {
    pub seed: u64,
    pub step: usize,
    /// Samples per prompt.
    pub n: usize,
    pub max_response_len: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub stop_token_ids: &'a [u32],
    /// KV cache capacity in tokens (`None`: the whole batch at once).
    pub max_kv_tokens: Option<usize>,
}

/// The graded responses of one step, sample `i` answering prompt `i / n`.
pub struct Rollouts {
    /// Prompt + response tokens (generation stops at the first EOS, which is kept).
    pub seqs: Vec<Vec<u32>>,
    pub prompt_lens: Vec<usize>,
    pub rewards: Vec<f32>,
    pub correct: Vec<bool>,
    /// Cut at the budget (no EOS within it).
    pub cut: Vec<bool>,
    pub rollout_time: PhaseTime,
    pub verify_time: PhaseTime,
}

impl Rollouts {
    pub fn response_len(&self, i: usize) -> usize {
        self.seqs[i].len() - self.prompt_lens[i]
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
                    seed: rollout_seed(p.seed, p.step, pi, si),
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
    let texts: Vec<String> =
        completions.iter().map(|c| tokenizer.decode(&c.tokens, true)).collect::<Result<_>>()?;
    let items: Vec<(&str, &Gold)> =
        texts.iter().enumerate().map(|(i, s)| (s.as_str(), prompts[i / p.n].1)).collect();
    let grades = grade_batch(&items, reward);
    let cut: Vec<bool> = completions.iter().map(|c| c.finish == FinishReason::Length).collect();
    let rewards: Vec<f32> =
        grades.iter().zip(&cut).map(|(g, &cut)| if cut { reward.wrong_reward } else { g.reward }).collect();
    let correct = rewards.iter().map(|&r| r == reward.correct_reward).collect();
    let verify_time = PhaseTime::new(t.elapsed().as_secs_f64(), 0);

    let prompt_lens = requests.iter().map(|r| r.prompt.len()).collect();
    let seqs = requests.into_iter().zip(completions).map(|(r, c)| [r.prompt, c.tokens].concat()).collect();
    Ok(Rollouts { seqs, prompt_lens, rewards, correct, cut, rollout_time, verify_time })
}
