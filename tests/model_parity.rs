//! Parity of the CPU forward with transformers (tests/fixtures/*/reference.json, made by
//! scripts/make_fixtures.py): prefill logits, token-by-token decode through the paged cache,
//! batched decode of mixed-length sequences, and exact greedy continuations.
mod common;
use common::{fixture, reference, rel_err, stepwise_logits};
use scalerl::engine::{generate, generate_with_stats, GenerateOptions, Request, SamplingParams};
use scalerl::kv::BlockAllocator;
use scalerl::model::{Model, SeqChunk};

const MODELS: [&str; 4] = ["tiny-qwen2", "tiny-llama", "tiny-qwen2-bf16-sharded", "tiny-qwen2-d64"];
/// f32 parity bound from the issue: max abs error ≤ 1e-4 × max |logit|.
const TOL: f32 = 1e-4;

fn load(name: &str) -> Model {
    Model::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[test]
fn prefill_logits_match_transformers() {
    for name in MODELS {
        let (model, r) = (load(name), reference(name));
        for (p, prompt) in r.prompts.iter().enumerate() {
            let got = model.sequence_logits(prompt, true).unwrap();
            let worst = (0..prompt.len()).map(|i| rel_err(&got[i], &r.logits[p][i])).fold(0f32, f32::max);
            println!("{name} prompt {p} ({} tokens): prefill max rel err {worst:.2e}", prompt.len());
            assert!(worst <= TOL, "{name} prompt {p}: {worst}");
        }
    }
}


#[test]
fn decode_through_paged_cache_matches_prefill_and_reference() {
    for name in MODELS {
        let (model, r) = (load(name), reference(name));
        for block_size in [1, 4, 16] {
            // One sequence at a time, then all together (mixed lengths in one batch).
            let alone: Vec<_> = r.prompts.iter().map(|p| stepwise_logits(&model, &[p.clone()], block_size).remove(0)).collect();
            let batched = stepwise_logits(&model, &r.prompts, block_size);
            for (p, prompt) in r.prompts.iter().enumerate() {
                let prefill = model.sequence_logits(prompt, true).unwrap();
                let mut worst_ref = 0f32;
                for i in 0..prompt.len() {
                    worst_ref = worst_ref.max(rel_err(&batched[p][i], &r.logits[p][i]));
                    assert!(rel_err(&alone[p][i], &prefill[i]) <= TOL, "{name} p{p} pos {i}: decode vs prefill");
                    // A row's result must not depend on which other rows share the batch.
                    assert_eq!(alone[p][i], batched[p][i], "{name} p{p} pos {i}: batch changed the numbers");
                }
                assert!(worst_ref <= TOL, "{name} p{p} block {block_size}: decode vs transformers {worst_ref}");
            }
        }
    }
}

#[test]
fn chunked_prefill_starting_mid_block_matches() {
    let (model, r) = (load("tiny-qwen2"), reference("tiny-qwen2"));
    let prompt = r.prompts.iter().max_by_key(|p| p.len()).unwrap();
    let p = r.prompts.iter().position(|x| x == prompt).unwrap();
    let bs = 4;
    let mut alloc = BlockAllocator::new(prompt.len().div_ceil(bs), bs);
    let mut table = Vec::new();
    alloc.ensure_capacity(&mut table, prompt.len()).unwrap();
    let mut cache = model.new_cache(alloc.num_blocks(), bs).unwrap();
    let mut start = 0;
    for len in [3, 6, 1, 100] {
        let end = (start + len).min(prompt.len());
        let h = model.forward(&mut cache, &[SeqChunk { tokens: &prompt[start..end], start_pos: start, table: &table }]).unwrap();
        let logits = model.logits(&h, &(0..end - start).collect::<Vec<_>>()).unwrap();
        for (i, row) in logits.chunks_exact(model.config.vocab_size).enumerate() {
            assert!(rel_err(row, &r.logits[p][start + i]) <= TOL, "position {}", start + i);
        }
        start = end;
    }
    assert_eq!(start, prompt.len());
}

#[test]
fn greedy_continuations_match_exactly_alone_and_batched() {
    for name in MODELS {
        let (model, r) = (load(name), reference(name));
        let greedy = |max_new| SamplingParams { temperature: 0.0, max_new_tokens: max_new, ..Default::default() };
        let requests: Vec<Request> =
            r.greedy.iter().map(|(p, n, _)| Request { prompt: p.clone(), params: greedy(*n) }).collect();
        let opts = GenerateOptions { block_size: 8, ..Default::default() };
        let batched = generate(&model, &requests, &opts, |_, _, _| {}).unwrap();
        for (i, (req, (_, _, want))) in requests.iter().zip(&r.greedy).enumerate() {
            let alone = generate(&model, std::slice::from_ref(req), &opts, |_, _, _| {}).unwrap();
            assert_eq!(&alone[0].tokens, want, "{name} greedy {i} alone");
            assert_eq!(&batched[i].tokens, want, "{name} greedy {i} batched");
            assert!(batched[i].logprobs.iter().all(|lp| *lp <= 0.0 && lp.is_finite()));
        }
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_stops_on_eos() {
    let model = load("tiny-qwen2");
    let prompt = reference("tiny-qwen2").prompts[2].clone();
    let params = |seed| SamplingParams { temperature: 1.0, top_p: 0.9, top_k: 50, min_p: 0.0, seed, max_new_tokens: 40, stop_token_ids: vec![] };
    let run = |p: SamplingParams| generate(&model, &[Request { prompt: prompt.clone(), params: p }], &GenerateOptions::default(), |_, _, _| {}).unwrap().remove(0);
    let a = run(params(1));
    assert_eq!(a.tokens, run(params(1)).tokens);
    assert_ne!(a.tokens, run(params(2)).tokens);
    assert_eq!(a.finish.as_str(), "length");
    // Declare the 5th sampled token a stop token: generation must end right there.
    let stop = a.tokens[4];
    let first = a.tokens.iter().position(|&t| t == stop).unwrap();
    let b = run(SamplingParams { stop_token_ids: vec![stop], ..params(1) });
    assert_eq!(b.tokens, a.tokens[..=first].to_vec());
    assert_eq!(b.finish.as_str(), "stop");
}

/// KV tokens a request reserves: prompt + max_new_tokens in whole blocks.
fn kv_need(r: &Request, block_size: usize) -> usize {
    (r.prompt.len() + r.params.max_new_tokens).div_ceil(block_size) * block_size
}

#[test]
fn a_kv_budget_admits_requests_as_others_finish_with_the_same_results() {
    let model = load("tiny-qwen2");
    let prompts = reference("tiny-qwen2").prompts;
    let bs = 8;
    // Seeded sampling, a different length for each request, so they finish at different steps.
    let requests: Vec<Request> = (0..6)
        .map(|i| Request {
            prompt: prompts[i % prompts.len()].clone(),
            params: SamplingParams {
                temperature: 1.0,
                top_p: 0.9,
                top_k: 0,
                min_p: 0.0,
                seed: 10 + i as u64,
                max_new_tokens: 3 + 5 * i,
                stop_token_ids: vec![],
            },
        })
        .collect();
    let need: Vec<usize> = requests.iter().map(|r| kv_need(r, bs)).collect();
    let run = |budget: Option<usize>| {
        let opts = GenerateOptions { block_size: bs, max_kv_tokens: budget, ..Default::default() };
        let mut stream = Vec::new();
        let (out, stats) = generate_with_stats(&model, &requests, &opts, |i, _, _| stream.push(i)).unwrap();
        // Most requests in flight at once (first token emitted, last not yet), from the stream.
        let (mut emitted, mut most_running) = (vec![0; requests.len()], 0);
        for i in stream {
            emitted[i] += 1;
            most_running = usize::max(most_running, emitted.iter().zip(&out).filter(|(&e, c)| e > 0 && e < c.tokens.len()).count());
        }
        (out, stats, most_running)
    };
    let (all_at_once, stats, _) = run(None);
    assert_eq!(stats.preemptions, 0, "without a budget nothing is preempted");
    let longest = *need.iter().max().unwrap();
    // Blocks are taken as sequences grow: the tightest budgets run out mid-generation and
    // preempt the newest sequences, which recompute later; every budget gives the same tokens.
    for budget in [longest, longest + need[0] + need[1], longest + 5] {
        let (out, stats, most_running) = run(Some(budget));
        assert!(stats.peak_blocks * bs <= budget, "budget {budget}: {} tokens of blocks in use at once", stats.peak_blocks * bs);
        assert!(most_running >= 1 && most_running < requests.len(), "budget {budget}: {most_running} running at once");
        for (i, (a, b)) in out.iter().zip(&all_at_once).enumerate() {
            assert_eq!(a.tokens, b.tokens, "budget {budget}: request {i}'s tokens depend on admission or preemption");
            // The CPU GEMM's summation order depends on the batch's row count: a few ulps.
            for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
                assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "budget {budget}: request {i}: log-prob {x} vs {y}");
            }
        }
        if budget == longest {
            assert!(stats.preemptions > 0, "room for one longest request only, yet nothing was preempted");
        }
    }
    // Room for two of the longest: some must overlap.
    let (_, _, two) = run(Some(2 * longest));
    assert!(two >= 2, "two of the longest fit, yet at most {two} ran together");
    // A request that can never fit is refused up front, naming it and the option.
    let opts = GenerateOptions { block_size: bs, max_kv_tokens: Some(longest - 1), ..Default::default() };
    let e = format!("{:#}", generate(&model, &requests, &opts, |_, _, _| {}).unwrap_err());
    let first = need.iter().position(|&n| n == longest).unwrap();
    assert!(e.contains(&format!("request {first}:")) && e.contains("max_kv_tokens"), "{e}");
}

#[test]
fn samples_of_one_prompt_share_its_blocks_with_the_same_results() {
    let model = load("tiny-qwen2");
    let prompts = reference("tiny-qwen2").prompts;
    let bs = 4;
    // Groups of 4 samples of the 40- and 17-token prompts and one of the 1-token prompt (nothing
    // to share), each sample with its own seed and budget.
    let mut requests = Vec::new();
    for (g, p) in [3usize, 2, 0].into_iter().enumerate() {
        for s in 0..4 {
            let params = SamplingParams {
                temperature: 1.0,
                top_p: 0.95,
                top_k: 0,
                min_p: 0.0,
                seed: (100 * g + s) as u64,
                max_new_tokens: 6 + 3 * s,
                stop_token_ids: vec![],
            };
            requests.push(Request { prompt: prompts[p].clone(), params });
        }
    }
    let run = |share: bool, budget: Option<usize>| {
        let opts = GenerateOptions { block_size: bs, max_kv_tokens: budget, share_prompts: share, ..Default::default() };
        let mut stream = Vec::new();
        let out = generate(&model, &requests, &opts, |i, _, _| stream.push(i)).unwrap();
        // Most requests running at once, replayed from the stream.
        let mut emitted = vec![0; requests.len()];
        let mut most = 0;
        for i in stream {
            emitted[i] += 1;
            most = usize::max(most, emitted.iter().zip(&out).filter(|(&e, c)| e > 0 && e < c.tokens.len()).count());
        }
        (out, most)
    };
    let (unshared, _) = run(false, None);
    let (shared, _) = run(true, None);
    // With sharing nothing is preempted: the cache is sized for everything.
    let opts = GenerateOptions { block_size: bs, ..Default::default() };
    assert_eq!(generate_with_stats(&model, &requests, &opts, |_, _, _| {}).unwrap().1.preemptions, 0);
    for (i, (a, b)) in shared.iter().zip(&unshared).enumerate() {
        assert_eq!(a.tokens, b.tokens, "request {i}: sharing the prompt's blocks changed its tokens");
        for (x, y) in a.logprobs.iter().zip(&b.logprobs) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0), "request {i}: log-prob {x} vs {y}");
        }
    }
    // The KV tokens all twelve take at once when the 40- and 17-token groups share their first
    // 36 and 16 prompt tokens: fits with sharing, not without.
    let need = |r: &Request| (r.prompt.len() + r.params.max_new_tokens).div_ceil(bs) * bs;
    let saved = 3 * 36 + 3 * 16;
    let budget = requests.iter().map(need).sum::<usize>() - saved;
    let (out, most) = run(true, Some(budget));
    assert_eq!(most, requests.len(), "with sharing all run at once");
    for (a, b) in out.iter().zip(&shared) {
        assert_eq!(a.tokens, b.tokens);
    }
    let (_, most) = run(false, Some(budget));
    assert!(most < requests.len(), "without sharing {most} ran at once in a budget that cannot hold all");
    // A cache that holds little more than one group: members are preempted (leaders too) and
    // come back, re-attaching to the shared blocks while another member holds them, or
    // recomputing the prompt when none does. The tokens do not change.
    let longest = requests.iter().map(need).max().unwrap();
    for budget in [longest + 4 * bs, 2 * longest] {
        let opts = GenerateOptions { block_size: bs, max_kv_tokens: Some(budget), ..Default::default() };
        let (out, stats) = generate_with_stats(&model, &requests, &opts, |_, _, _| {}).unwrap();
        assert!(stats.preemptions > 0 && stats.peak_blocks * bs <= budget, "budget {budget}: {stats:?}");
        for (i, (a, b)) in out.iter().zip(&shared).enumerate() {
            assert_eq!(a.tokens, b.tokens, "budget {budget}: request {i}: preempted and recomputed beside shared blocks");
        }
    }
}

/// The comparison helper cannot be fooled by NaN: a row of NaN logits used to score 0 (f32::max
/// drops NaN), so a forward that produced NaN passed every tolerance.
#[test]
#[should_panic(expected = "holds NaN")]
fn rel_err_refuses_nan_rows() {
    let reference = [1.0f32, -2.0, 0.5];
    rel_err(&[f32::NAN; 3], &reference);
}

#[test]
fn nan_max_keeps_nan() {
    assert!(common::nan_max([0.1, f32::NAN, 0.3]).is_nan());
    assert_eq!(common::nan_max([0.1, 0.3]), 0.3);
}

/// A prompt longer than the step's token budget is prefilled in chunks over several steps while
/// the other sequences keep decoding (they are not stalled), with the same tokens as unchunked.
#[test]
fn long_prompts_are_prefilled_in_chunks_beside_decoding() {
    let model = load("tiny-qwen2");
    let prompts = reference("tiny-qwen2").prompts;
    let long = prompts.iter().max_by_key(|p| p.len()).unwrap().clone();
    let short = prompts.iter().min_by_key(|p| p.len()).unwrap().clone();
    assert!(long.len() > 30, "the fixture's longest prompt has {} tokens", long.len());
    let params = |seed, n| SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0, min_p: 0.0, seed, max_new_tokens: n, stop_token_ids: vec![] };
    // The short request starts first and decodes; the long one arrives behind it.
    let requests = vec![Request { prompt: short, params: params(1, 5) }, Request { prompt: long.clone(), params: params(2, 4) }];
    let whole = GenerateOptions { block_size: 4, ..Default::default() };
    let (want, whole_stats) = generate_with_stats(&model, &requests, &whole, |_, _, _| {}).unwrap();
    assert_eq!(whole_stats.steps, 5, "unchunked, the long prompt is prefilled in the first step");
    let chunked = GenerateOptions { max_step_tokens: 8, ..whole.clone() };
    let mut stream = Vec::new();
    let (got, stats) = generate_with_stats(&model, &requests, &chunked, |i, _, _| stream.push(i)).unwrap();
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.tokens, b.tokens, "request {i}: chunked prefill changed its tokens");
    }
    // At most 8 tokens a step (the short request's decode row among them): the 40-token prompt
    // takes at least 6 steps to prefill, then 3 more to decode ...
    assert!(stats.steps >= 40usize.div_ceil(7) + 3, "{stats:?}");
    // ... while the short request produced its 5 tokens, one a step, before the long one's first.
    let first_long = stream.iter().position(|&i| i == 1).unwrap();
    assert_eq!(first_long, 5, "the short request was stalled by the long prefill: {stream:?}");
}
