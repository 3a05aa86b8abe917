//! The CUDA backend's forward in interpret mode (bf16 weights and activations, the kernels of
//! kernels/*.cu run on the CPU with CUDA semantics, `gemm_bf16_nt` for the linear layers) against
//! the f32 CPU backend and transformers (tests/fixtures/*/reference.json): prefill, token-by-token
//! decode through the paged cache (mixed lengths in one batch, blocks crossed), and greedy
//! generation.
//!
//! Tolerance (bf16): max |interpret − reference| ≤ 3e-2 × max |reference logit| per row. bf16
//! keeps 8 mantissa bits (relative rounding 2^-9 ≈ 2e-3 per op); a few layers of rounded
//! residuals, GEMM outputs and attention land within ~1e-2 (measured below, printed).
mod common;
use common::{fixture, reference, rel_err, stepwise_logits};
use scalerl::model::CudaModel;
use scalerl::ops::cuda::CudaOps;
use scalerl::device::{Device, Schedule};
use scalerl::engine::{GenerateOptions, Request, SamplingParams};
use scalerl::kv::BlockAllocator;
use scalerl::model::{Model, SeqChunk};
use std::time::Instant;

/// tiny-qwen2-d64 (head_dim 64) runs attention through the flash kernels (prefill: the
/// FlashAttention-2-style kernel, decode: split-KV); the others (head_dim 12 and 16) through the
/// plain kernel (see src/ops/cuda/attention.rs).
const MODELS: [&str; 4] = ["tiny-qwen2", "tiny-llama", "tiny-qwen2-bf16-sharded", "tiny-qwen2-d64"];
const TOL: f32 = 3e-2;

fn load(name: &str) -> (Model, CudaModel) {
    let model = Model::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let cuda = CudaModel::from_model(CudaOps::new(Device::interpret()), &model).unwrap();
    (model, cuda)
}

/// The CPU (f32) model with every weight rounded to bf16: how much of the interpret error is
/// the weights' rounding alone (printed next to the interpret numbers).
fn bf16_weights_cpu(name: &str) -> Model {
    let mut m = Model::load(&fixture(name)).unwrap();
    m.weights.flat_mut().iter_mut().for_each(|x| *x = half::bf16::from_f32(*x).to_f32());
    m
}

#[test]
fn head_dim_64_takes_the_flash_kernels_and_others_the_plain_one() {
    use scalerl::ops::cuda::attention::AttentionPlan;
    use scalerl::ops::cuda::TokenMeta;
    let dev = Device::interpret();
    let table: Vec<u32> = (0..8).collect();
    let prefill = TokenMeta::upload(&dev, &[(0, 20, &table[..]), (30, 1, &table[..])], 16).unwrap();
    let decode = TokenMeta::upload(&dev, &[(40, 1, &table[..]), (7, 1, &table[..])], 16).unwrap();
    let mixed = TokenMeta::upload(&dev, &[(40, 1, &table[..]), (0, 20, &table[..])], 16).unwrap();
    let kernel = |meta: &TokenMeta, name: &str| {
        let c = Model::load(&fixture(name)).unwrap().config;
        AttentionPlan::new(&dev, meta, c.num_heads, c.num_kv_heads, c.head_dim).unwrap().kernel()
    };
    assert_eq!(kernel(&prefill, "tiny-qwen2-d64"), "prefill_attention");
    assert_eq!(kernel(&decode, "tiny-qwen2-d64"), "attention_decode");
    assert_eq!(kernel(&mixed, "tiny-qwen2-d64"), "attention_decode+prefill_attention");
    assert_eq!(kernel(&mixed, "tiny-qwen2"), "paged_attention_bf16");
    assert_eq!(kernel(&prefill, "tiny-qwen2"), "paged_attention_bf16");
    assert_eq!(kernel(&decode, "tiny-llama"), "paged_attention_bf16");
}

#[test]
fn prefill_logits_match_cpu_and_transformers() {
    for name in MODELS {
        let ((model, cuda), r) = (load(name), reference(name));
        let rounded = bf16_weights_cpu(name);
        for (p, prompt) in r.prompts.iter().enumerate() {
            let w16 = rounded.sequence_logits(prompt, true).unwrap();
            let w16_err = (0..prompt.len()).map(|i| rel_err(&w16[i], &r.logits[p][i])).fold(0f32, f32::max);
            let started = Instant::now();
            let got = cuda.sequence_logits(prompt, true).unwrap();
            let secs = started.elapsed().as_secs_f64();
            let cpu = model.sequence_logits(prompt, true).unwrap();
            let (mut vs_cpu, mut vs_ref) = (0f32, 0f32);
            for i in 0..prompt.len() {
                assert!(got[i].iter().all(|v| v.is_finite()), "{name} p{p} pos {i}: non-finite logits");
                vs_cpu = vs_cpu.max(rel_err(&got[i], &cpu[i]));
                vs_ref = vs_ref.max(rel_err(&got[i], &r.logits[p][i]));
            }
            println!(
                "{name} prompt {p} ({} tokens): interpret prefill max rel err vs cpu {vs_cpu:.2e}, vs transformers {vs_ref:.2e} ({:.0} ms; f32 CPU with bf16-rounded weights vs transformers: {w16_err:.2e})",
                prompt.len(),
                secs * 1e3
            );
            assert!(vs_cpu <= TOL && vs_ref <= TOL, "{name} prompt {p}: {vs_cpu} / {vs_ref}");
        }
    }
}


#[test]
fn decode_through_paged_cache_matches_cpu_and_transformers() {
    for name in MODELS {
        let ((model, cuda), r) = (load(name), reference(name));
        let started = Instant::now();
        let batched = stepwise_logits(&cuda, &r.prompts, 4);
        let secs = started.elapsed().as_secs_f64();
        let (mut vs_cpu, mut vs_ref, mut vs_prefill) = (0f32, 0f32, 0f32);
        for (p, prompt) in r.prompts.iter().enumerate() {
            let cpu = model.sequence_logits(prompt, true).unwrap();
            let prefill = cuda.sequence_logits(prompt, true).unwrap();
            for i in 0..prompt.len() {
                vs_cpu = vs_cpu.max(rel_err(&batched[p][i], &cpu[i]));
                vs_ref = vs_ref.max(rel_err(&batched[p][i], &r.logits[p][i]));
                vs_prefill = vs_prefill.max(rel_err(&batched[p][i], &prefill[i]));
            }
        }
        let steps = r.prompts.iter().map(|p| p.len()).max().unwrap();
        println!(
            "{name}: interpret decode ({steps} steps, block size 4) max rel err vs cpu {vs_cpu:.2e}, vs transformers {vs_ref:.2e}, vs interpret prefill {vs_prefill:.2e} ({:.0} ms, {:.1} ms/step)",
            secs * 1e3,
            secs * 1e3 / steps as f64
        );
        assert!(vs_cpu <= TOL && vs_ref <= TOL && vs_prefill <= TOL, "{name}: {vs_cpu} / {vs_ref} / {vs_prefill}");
    }
}

#[test]
fn chunked_prefill_starting_mid_block_gives_the_prefill_bits() {
    // Rows are independent (per-row GEMM, one block per row/head in the plain attention kernel
    // that tiny-qwen2's head_dim 12 takes), so chunking changes nothing.
    let (_, cuda) = load("tiny-qwen2");
    let prompt = reference("tiny-qwen2").prompts.iter().max_by_key(|p| p.len()).unwrap().clone();
    let prefill = cuda.sequence_logits(&prompt, true).unwrap();
    let bs = 4;
    let mut alloc = BlockAllocator::new(prompt.len().div_ceil(bs), bs);
    let mut table = Vec::new();
    alloc.ensure_capacity(&mut table, prompt.len()).unwrap();
    table.reverse(); // physical blocks in decreasing order
    let mut cache = cuda.new_cache(alloc.num_blocks(), bs).unwrap();
    let mut start = 0;
    for len in [3, 6, 1, 100] {
        let end = (start + len).min(prompt.len());
        let h = cuda
            .forward(&mut cache, &[SeqChunk { tokens: &prompt[start..end], start_pos: start, table: &table }])
            .unwrap();
        let logits = cuda.logits(&h, &(0..end - start).collect::<Vec<_>>()).unwrap();
        for (i, row) in logits.chunks_exact(cuda.config.vocab_size).enumerate() {
            assert_eq!(row, &prefill[start + i][..], "position {}", start + i);
        }
        start = end;
    }
    assert_eq!(start, prompt.len());
}

#[test]
fn cli_logits_and_generate_run_in_interpret_mode() {
    let exe = env!("CARGO_BIN_EXE_scalerl");
    let dir = fixture("tiny-qwen2");
    let tokens = [17u32, 3, 250, 9, 44];
    let out = std::process::Command::new(exe)
        .args(["logits", "--device", "interpret", "--all-positions", "--tokens", "17,3,250,9,44", "--model"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["device"], "interpret");
    let got: Vec<Vec<f32>> = serde_json::from_value(v["logits"].clone()).unwrap();
    let (_, cuda) = load("tiny-qwen2");
    assert_eq!(got, cuda.sequence_logits(&tokens, true).unwrap());
    let out = std::process::Command::new(exe)
        .args([
            "generate",
            "--device",
            "interpret",
            "--prompt",
            "hello world",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
            "--model",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("device: interpret") && err.contains("5 generated tokens"), "{err}");
}

#[test]
fn results_do_not_depend_on_the_thread_schedule() {
    // Every reduction has a fixed tree order, so any schedule gives the same bits.
    let model = Model::load(&fixture("tiny-qwen2")).unwrap();
    let prompt = reference("tiny-qwen2").prompts[3].clone();
    let base =
        CudaModel::from_model(CudaOps::new(Device::interpret()), &model).unwrap().sequence_logits(&prompt, true).unwrap();
    for schedule in [Schedule::Reverse, Schedule::Random(7)] {
        let m = CudaModel::from_model(CudaOps::new(Device::interpret_with(schedule)), &model).unwrap();
        assert_eq!(m.sequence_logits(&prompt, true).unwrap(), base, "{schedule:?}");
    }
}

#[test]
fn greedy_generation_runs_and_follows_the_reference() {
    for name in MODELS {
        let ((_, cuda), r) = (load(name), reference(name));
        let greedy = |n| SamplingParams { temperature: 0.0, max_new_tokens: n, ..Default::default() };
        let requests: Vec<Request> =
            r.greedy.iter().map(|(p, n, _)| Request { prompt: p.clone(), params: greedy(*n) }).collect();
        let opts = GenerateOptions { block_size: 8, ..Default::default() };
        let started = Instant::now();
        let mut streamed = 0;
        let out = scalerl::engine::generate(&cuda, &requests, &opts, |_, _, _| streamed += 1).unwrap();
        let secs = started.elapsed().as_secs_f64();
        // A sequence's tokens must not depend on what else is in the batch.
        for (i, req) in requests.iter().enumerate() {
            let alone = scalerl::engine::generate(&cuda, std::slice::from_ref(req), &opts, |_, _, _| {}).unwrap();
            assert_eq!(alone[0].tokens, out[i].tokens, "{name} greedy {i}: alone vs batched");
        }
        // Nor on admission under a KV budget. With 16, 4, 8 and 12 new tokens and room for the
        // first and last requests, the last (longest prompt) waits until the second and third
        // finish, then prefills beside the first one's decode rows. Greedy, so each output is a
        // prefix of the one above.
        let short: Vec<Request> = requests
            .iter()
            .zip([16, 4, 8, 12])
            .map(|(r, n)| Request { params: greedy(n.min(r.params.max_new_tokens)), ..r.clone() })
            .collect();
        let need = |r: &Request| (r.prompt.len() + r.params.max_new_tokens).next_multiple_of(opts.block_size);
        let budget = GenerateOptions { max_kv_tokens: Some(need(&short[0]) + need(&short[3])), ..opts.clone() };
        let mut stream = Vec::new();
        let admitted = scalerl::engine::generate(&cuda, &short, &budget, |i, _, _| stream.push(i)).unwrap();
        let last_starts = stream.iter().position(|&i| i == 3).unwrap();
        assert!(stream[last_starts..].contains(&0), "{name}: request 3 never ran beside request 0: {stream:?}");
        for (i, c) in admitted.iter().enumerate() {
            assert_eq!(c.tokens[..], out[i].tokens[..c.tokens.len()], "{name} greedy {i}: admitted under a KV budget");
        }
        // Three samples of the longest prompt share its first blocks: the first prefills them,
        // the others only the tail after them, in the same forward. Greedy, so all three
        // continue as that request did above.
        let group = vec![requests[3].clone(); 3];
        for c in scalerl::engine::generate(&cuda, &group, &opts, |_, _, _| {}).unwrap() {
            assert_eq!(c.tokens, out[3].tokens, "{name}: a sample sharing its prompt's blocks");
        }
        let (mut matched, mut total) = (0, 0);
        let mut report = Vec::new();
        for (i, (c, (_, n, want))) in out.iter().zip(&r.greedy).enumerate() {
            assert_eq!(c.tokens.len(), *n, "{name} greedy {i}: no stop ids, so max_new_tokens tokens");
            assert!(c.logprobs.iter().all(|lp| *lp <= 0.0 && lp.is_finite()), "{name} greedy {i}");
            let prefix = c.tokens.iter().zip(want).take_while(|(a, b)| a == b).count();
            report.push(format!("{prefix}/{n}"));
            matched += prefix;
            total += n;
            // The first token comes from the prefill logits, which sit within the bf16 bound.
            assert!(prefix >= 1, "{name} greedy {i}: first token {} vs reference {}", c.tokens[0], want[0]);
        }
        assert_eq!(streamed, total);
        println!(
            "{name}: interpret greedy tokens matching the reference before the first divergence: {matched}/{total} ({}) in {:.0} ms",
            report.join(", "),
            secs * 1e3
        );
    }
}

/// The CUDA backend runs the one transformer's inference and training; an op without a kernel for
/// a shape must say so (never fall back to the CPU in silence).
#[test]
fn training_ops_without_kernels_say_so() {
    let (_, cuda) = load("tiny-qwen2");
    // Packed attention has kernels for head_dim 64 and 128 only; tiny-qwen2's 12 is refused by name.
    let err = cuda.forward_packed(&[&[1, 2, 3]], scalerl::model::Save::All).err().expect("no packed attention kernel for head_dim 12");
    let msg = format!("{err:#}");
    assert!(msg.contains("head_dim 12 has no kernel"), "{msg}");
    use scalerl::ops::Ops;
    // Gradient sets exist (f32), and the fused log-prob head writes the lm_head's gradient into
    // one (tests/logprob_interpret.rs checks its values).
    let mut grads = cuda.ops.zeros_params(cuda.table()).unwrap();
    assert_eq!(grads.dtype(), scalerl::device::DType::F32);
    let h = cuda.config.hidden_size;
    let hidden = cuda.ops.upload(&vec![0.5; 2 * h]).unwrap();
    let sh = scalerl::ops::LogProbShape { hidden: h, vocab: cuda.config.vocab_size, temperature: 1.0, chunk: 64 };
    let lp = cuda.ops.logprobs(&hidden, &[0, 1], &[1, 2], cuda.lm_head(), sh).unwrap();
    assert!(lp.logp.iter().all(|x| x.is_finite() && *x < 0.0), "{:?}", lp.logp);
    let mut d_hidden = cuda.ops.zeros(2 * h).unwrap();
    let d_lm_head = cuda.ops.param_mut(&mut grads, cuda.table().lm_head());
    cuda.ops.logprobs_backward(&hidden, &[0, 1], &[1, 2], cuda.lm_head(), &lp, &[1.0, -1.0], None, sh, &mut d_hidden, d_lm_head).unwrap();
    assert!(cuda.ops.sum_squares(&grads).unwrap() > 0.0);
}

/// On the CUDA backend too (interpret mode; the flash kernels on tiny-qwen2-d64): a KV budget
/// that forces preemption gives the unbounded run's greedy tokens — the preempted sequences are
/// recomputed by the prefill kernel where they had been decoded, and argmax does not move.
#[test]
fn preemption_recomputes_to_the_same_tokens() {
    for name in ["tiny-qwen2", "tiny-qwen2-d64"] {
        let ((_, cuda), r) = (load(name), reference(name));
        // Longest prompt first: it starts, the short ones start beside it, and as all grow the
        // cache runs out and the newest are preempted.
        let requests: Vec<Request> = r
            .greedy
            .iter()
            .rev()
            .map(|(p, n, _)| Request { prompt: p.clone(), params: SamplingParams { temperature: 0.0, max_new_tokens: *n, ..Default::default() } })
            .collect();
        let opts = GenerateOptions { block_size: 8, ..Default::default() };
        let free = scalerl::engine::generate(&cuda, &requests, &opts, |_, _, _| {}).unwrap();
        let longest = requests.iter().map(|r| (r.prompt.len() + r.params.max_new_tokens).next_multiple_of(8)).max().unwrap();
        let mut preempted = 0;
        for extra in [0, 8, 16, 24] {
            let tight = GenerateOptions { max_kv_tokens: Some(longest + extra), ..opts.clone() };
            let (out, stats) = scalerl::engine::generate_with_stats(&cuda, &requests, &tight, |_, _, _| {}).unwrap();
            preempted += stats.preemptions;
            for (i, (a, b)) in out.iter().zip(&free).enumerate() {
                assert_eq!(a.tokens, b.tokens, "{name} request {i}, budget {}: preempted and recomputed", longest + extra);
            }
        }
        assert!(preempted > 0, "{name}: no budget preempted anything");
    }
}

/// `step` samples on the device (kernels/sample.cu): for a batch of sequences with different
/// draws, the tokens and log-probs equal what the CPU reference sampler draws from the same
/// rows' logits (downloaded from the same forward).
#[test]
fn the_step_samples_on_the_device_what_the_cpu_sampler_draws_from_its_logits() {
    let (_, cuda) = load("tiny-qwen2");
    let prompts: Vec<Vec<u32>> = reference("tiny-qwen2").prompts.iter().take(3).cloned().collect();
    let bs = 4;
    let mut alloc = BlockAllocator::new(prompts.iter().map(|p| p.len().div_ceil(bs)).sum(), bs);
    let tables: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut t = Vec::new();
            alloc.ensure_capacity(&mut t, p.len()).unwrap();
            t
        })
        .collect();
    let chunks: Vec<SeqChunk> = prompts.iter().zip(&tables).map(|(p, t)| SeqChunk { tokens: p, start_pos: 0, table: t }).collect();
    let draws = [
        SamplingParams { temperature: 0.0, ..Default::default() }.draw(prompts[0].len()),
        SamplingParams { temperature: 1.0, seed: 3, ..Default::default() }.draw(prompts[1].len()),
        SamplingParams { temperature: 0.7, top_k: 20, top_p: 0.9, min_p: 0.01, seed: 4, ..Default::default() }.draw(prompts[2].len()),
    ];
    let mut cache = cuda.new_cache(alloc.num_blocks(), bs).unwrap();
    let got = cuda.step(&mut cache, &chunks, &draws.map(Some)).unwrap();
    let mut cache = cuda.new_cache(alloc.num_blocks(), bs).unwrap();
    let hidden = cuda.forward(&mut cache, &chunks).unwrap();
    let rows: Vec<usize> = prompts.iter().scan(0, |end, p| {
        *end += p.len();
        Some(*end - 1)
    }).collect();
    let logits = cuda.logits(&hidden, &rows).unwrap();
    for (i, row) in logits.chunks_exact(cuda.config.vocab_size).enumerate() {
        let want = scalerl::ops::cpu::sample::sample_row(row, &draws[i]).unwrap();
        assert_eq!(got[i], Some(want), "sequence {i} ({:?})", draws[i]);
    }
}
