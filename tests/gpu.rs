//! The device layer on a real GPU (`Device::cuda`): every kernel against the CPU reference, the
//! cuBLASLt GEMM against the CPU matmul, CUDA graph replay against direct launches, and the whole
//! tiny-qwen2 and tiny-qwen2-d64 models (plain and flash attention) through the CUDA backend
//! against the CPU backend and transformers.
//!
//! Without a GPU (no libcuda, no device, or a binary built without nvcc) every GPU test prints
//! "skipped: no GPU (…)" and passes, unless SCALERL_REQUIRE_GPU=1, which makes that a failure
//! (scripts/gpu-check.sh sets it on the GPU machine). The parity cases are written once for any
//! `Device` and also run here in interpret mode (`cases_pass_in_interpret_mode`), so CI checks the
//! test code itself; the shapes are those of tests/kernels_interpret.rs, plus shapes of the 1.5B
//! target model on the GPU only.
//!
//! Fixtures are found through $SCALERL_FIXTURES, else this checkout's tests/fixtures, else
//! ./tests/fixtures (the binary may run from a copied bundle, see scripts/gpu-check.sh).
use scalerl::model::CudaModel;
use scalerl::ops::cuda::CudaOps;
use scalerl::device::Device;
use scalerl::model::Model;
use std::time::Instant;
mod common;
#[path = "common/backward_cases.rs"]
mod backward_cases;
#[path = "common/decode_cases.rs"]
mod decode_cases;
#[path = "common/decode_graph_cases.rs"]
mod decode_graph_cases;
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
#[path = "common/logprob_cases.rs"]
mod logprob_cases;
#[path = "common/packed_cases.rs"]
mod packed_cases;
#[path = "common/prefill_cases.rs"]
mod prefill_cases;
#[path = "common/sample_cases.rs"]
mod sample_cases;
use common::{fixture, reference, rel_err, stepwise_logits};
use decode_cases::*;
use kernel_cases::*;
use logprob_cases::{grpo_cases, logprob_cases, logprob_launch_error_cases};
use prefill_cases::*;

fn require_gpu() -> bool {
    std::env::var("SCALERL_REQUIRE_GPU").as_deref() == Ok("1")
}

/// GPU 0, or None (after printing why) on a machine without one.
fn gpu() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => {
            println!("device: {}", d.name());
            Some(d)
        }
        Err(e) => {
            assert!(!require_gpu(), "SCALERL_REQUIRE_GPU=1 but no usable GPU: {e:#}");
            let why = format!("{e:#}");
            if why.starts_with("no GPU") {
                println!("skipped: {why}");
            } else {
                println!("skipped: no GPU ({why})");
            }
            None
        }
    }
}

// ---- the whole model ------------------------------------------------------------------------



/// bf16 tolerance of the CUDA backend against the f32 CPU backend and transformers (see
/// tests/interpret_model.rs: max |err| ≤ 3e-2 × max |reference logit| per row).
const TOL: f32 = 3e-2;

/// tiny-qwen2 (head_dim 12) runs the plain attention kernel, tiny-qwen2-d64 the flash ones.
fn model_cases(make_device: &dyn Fn() -> Device) {
    for name in ["tiny-qwen2", "tiny-qwen2-d64"] {
        model_case(name, make_device);
    }
}

fn model_case(name: &str, make_device: &dyn Fn() -> Device) {
    let model = Model::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let r = reference(name);
    let m = CudaModel::from_model(CudaOps::new(make_device()), &model).unwrap();
    let dev_name = m.ops.dev.name();
    let interp = CudaModel::from_model(CudaOps::new(Device::interpret()), &model).unwrap();
    for (p, prompt) in r.prompts.iter().enumerate() {
        let started = Instant::now();
        let got = m.sequence_logits(prompt, true).unwrap();
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let cpu = model.sequence_logits(prompt, true).unwrap();
        let int = interp.sequence_logits(prompt, true).unwrap();
        let (mut vs_cpu, mut vs_ref, mut vs_int) = (0f32, 0f32, 0f32);
        for i in 0..prompt.len() {
            assert!(got[i].iter().all(|v| v.is_finite()), "{name} p{p} pos {i}: non-finite logits");
            vs_cpu = vs_cpu.max(rel_err(&got[i], &cpu[i]));
            vs_ref = vs_ref.max(rel_err(&got[i], &r.logits[p][i]));
            vs_int = vs_int.max(rel_err(&got[i], &int[i]));
        }
        println!(
            "{name} prompt {p} ({} tokens) on {dev_name}: prefill max rel err vs cpu {vs_cpu:.2e}, vs transformers {vs_ref:.2e}, vs interpret {vs_int:.2e} ({ms:.1} ms)",
            prompt.len()
        );
        assert!(vs_cpu <= TOL && vs_ref <= TOL && vs_int <= TOL, "{name} prompt {p}: {vs_cpu} / {vs_ref} / {vs_int}");
    }
    // Decode through the paged cache, token by token, all prompts batched.
    let batched = stepwise_logits(&m, &r.prompts, 4);
    let (mut vs_cpu, mut vs_ref) = (0f32, 0f32);
    for (p, prompt) in r.prompts.iter().enumerate() {
        let cpu = model.sequence_logits(prompt, true).unwrap();
        for i in 0..prompt.len() {
            vs_cpu = vs_cpu.max(rel_err(&batched[p][i], &cpu[i]));
            vs_ref = vs_ref.max(rel_err(&batched[p][i], &r.logits[p][i]));
        }
    }
    println!("{name} on {dev_name}: decode (block size 4) max rel err vs cpu {vs_cpu:.2e}, vs transformers {vs_ref:.2e}");
    assert!(vs_cpu <= TOL && vs_ref <= TOL, "{name} decode: {vs_cpu} / {vs_ref}");
    // Greedy generation: the first token comes from the prefill logits, within the bound.
    let greedy = |n| scalerl::engine::SamplingParams { temperature: 0.0, max_new_tokens: n, ..Default::default() };
    let requests: Vec<scalerl::engine::Request> =
        r.greedy.iter().map(|(p, n, _)| scalerl::engine::Request { prompt: p.clone(), params: greedy(*n) }).collect();
    let opts = scalerl::engine::GenerateOptions { block_size: 8, ..Default::default() };
    let out = scalerl::engine::generate(&m, &requests, &opts, |_, _, _| {}).unwrap();
    let mut report = Vec::new();
    for (i, (c, (_, n, want))) in out.iter().zip(&r.greedy).enumerate() {
        assert_eq!(c.tokens.len(), *n, "greedy {i}");
        assert!(c.logprobs.iter().all(|lp| *lp <= 0.0 && lp.is_finite()), "greedy {i}");
        let prefix = c.tokens.iter().zip(want).take_while(|(a, b)| a == b).count();
        assert!(prefix >= 1, "greedy {i}: first token {} vs reference {}", c.tokens[0], want[0]);
        report.push(format!("{prefix}/{n}"));
    }
    println!("{name} on {dev_name}: greedy tokens matching transformers before the first divergence: {}", report.join(", "));
}

// ---- the tests ----------------------------------------------------------------------------------

/// Runs everywhere: without a GPU, `Device::cuda` is an error that says so, not a panic.
#[test]
fn cuda_device_is_a_clear_error_without_a_gpu() {
    let present = scalerl::device::cuda::driver_present();
    match Device::cuda(0) {
        Ok(d) => println!("GPU present: {}", d.name()),
        Err(e) => {
            let msg = format!("{e:#}");
            println!("Device::cuda(0): {msg}");
            if !present {
                assert!(msg.contains("no GPU") && msg.contains("libcuda"), "{msg}");
            }
            assert!(!require_gpu(), "SCALERL_REQUIRE_GPU=1 but {msg}");
            let by_name = Device::from_name("cuda").err().expect("from_name(cuda) fails like cuda(0)");
            assert_eq!(format!("{by_name:#}"), msg);
        }
    }
    assert!(matches!(Device::from_name("interpret"), Ok(Device::Interpret(_))));
    let e = Device::from_name("tpu").err().unwrap().to_string();
    assert!(e.contains("unknown device"), "{e}");
    assert!(Device::from_name("cuda:x").is_err());
    // Interpret mode captures as a GPU does (tests/decode_graphs.rs); an empty capture is refused.
    let e = Device::interpret().capture(|_| Ok(())).err().unwrap().to_string();
    assert!(e.contains("recorded nothing"), "{e}");
}

/// The parity cases on the interpreter: keeps this file's GPU checks themselves tested in CI.
#[test]
fn cases_pass_in_interpret_mode() {
    let dev = Device::interpret();
    rmsnorm_cases(&dev);
    rope_cases(&dev);
    silu_mul_cases(&dev);
    split_cols_cases(&dev);
    embedding_cases(&dev);
    cast_cases(&dev);
    kv_cache_write_cases(&dev);
    paged_attention_cases(&dev);
    decode_attention_cases(&dev);
    decode_error_cases(&dev);
    prefill_attention_cases(&dev);
    prefill_launch_error_cases(&dev);
    gemm_cases(&dev);
    gemm_odd_cases(&dev);
    launch_error_cases(&dev);
    logprob_cases(&dev);
    grpo_cases(&dev);
    logprob_launch_error_cases(&dev);
}

/// The model case on the interpreter (it compares interpret mode with itself there, and with
/// the CPU backend and transformers as tests/interpret_model.rs does).
#[test]
fn model_case_passes_in_interpret_mode() {
    model_cases(&Device::interpret);
}

#[test]
fn gpu_rmsnorm_residual_matches_cpu() {
    if let Some(d) = gpu() {
        rmsnorm_cases(&d);
    }
}

#[test]
fn gpu_rope_qk_matches_cpu() {
    if let Some(d) = gpu() {
        rope_cases(&d);
    }
}

#[test]
fn gpu_silu_mul_matches_cpu() {
    if let Some(d) = gpu() {
        silu_mul_cases(&d);
    }
}

#[test]
fn gpu_split_cols_is_exact() {
    if let Some(d) = gpu() {
        split_cols_cases(&d);
    }
}

#[test]
fn gpu_embedding_gather_matches_cpu() {
    if let Some(d) = gpu() {
        embedding_cases(&d);
    }
}

#[test]
fn gpu_casts_round_to_nearest_even_like_half() {
    if let Some(d) = gpu() {
        cast_cases(&d);
    }
}

#[test]
fn gpu_kv_cache_write_matches_cpu() {
    if let Some(d) = gpu() {
        kv_cache_write_cases(&d);
    }
}

#[test]
fn gpu_paged_attention_matches_cpu() {
    if let Some(d) = gpu() {
        paged_attention_cases(&d);
    }
}

#[test]
fn gpu_decode_attention_matches_cpu() {
    if let Some(d) = gpu() {
        decode_attention_cases(&d);
        decode_error_cases(&d);
    }
}

#[test]
fn gpu_prefill_attention_matches_cpu() {
    if let Some(d) = gpu() {
        prefill_attention_cases(&d);
        prefill_launch_error_cases(&d);
    }
}

/// The training attention over packed sequences (its interpret-mode run, on every schedule, is
/// tests/attention_packed_interpret.rs); on the GPU also at the 1.5B model's heads, 2K tokens.
#[test]
fn gpu_packed_attention_matches_cpu() {
    if let Some(d) = gpu() {
        packed_cases::packed_attention_cases(&d);
        packed_cases::packed_launch_error_cases(&d);
    }
}

/// The fused lm_head log-prob (with the 1.5B model's shape) and the GRPO loss; the first GPU run
/// also checks the interpreter's mma/ldmatrix fragment layouts against the hardware's.
#[test]
fn gpu_logprob_and_grpo_loss_match_cpu() {
    if let Some(d) = gpu() {
        logprob_cases(&d);
        grpo_cases(&d);
        logprob_launch_error_cases(&d);
    }
}

/// The device sampler: the CPU reference's token from the same logits and counter (the log-prob
/// within one f32 ulp: the GPU's f64 log), at the 1.5B model's vocabulary too, errors, and the
/// chi-square test of its frequencies (tests/sample_interpret.rs runs the same in interpret mode).
#[test]
fn gpu_sampler_matches_cpu() {
    if let Some(d) = gpu() {
        sample_cases::parity_cases(&d);
        sample_cases::tie_cases(&d);
        sample_cases::error_cases(&d);
        let v = 151_936;
        let logits: Vec<f32> = (0..8u64).flat_map(|s| sample_cases::random_logits(v, s, 1.0 + s as f64)).collect();
        let p = scalerl::engine::sampler::SamplingParams { temperature: 0.6, top_k: 500, top_p: 0.95, min_p: 0.001, seed: 9, ..Default::default() };
        let draws: Vec<_> = (0..8).map(|pos| p.draw(pos)).collect();
        sample_cases::check_rows(&d, v, &logits, &draws, "V 151936");
        sample_cases::check_rows_bf16(&d, v, &logits, &draws, "V 151936");
        let logits = [2.0f32, 1.5, 1.5, 1.0, 0.6, 0.2, -0.4, -1.0, f32::NEG_INFINITY, -2.5, 0.9, -0.1];
        let q = scalerl::engine::sampler::SamplingParams { temperature: 0.8, top_k: 8, top_p: 0.93, min_p: 0.03, seed: 77, ..Default::default() };
        sample_cases::chi_square_case(&d, &logits, q, 20_000, 5, 20.515);
    }
}

#[test]
fn gpu_gemm_matches_cpu_matmul() {
    if let Some(d) = gpu() {
        gemm_cases(&d);
    }
}

#[test]
fn gpu_gemm_odd_shapes_match_cpu_matmul() {
    if let Some(d) = gpu() {
        gemm_odd_cases(&d);
    }
}

#[test]
fn gpu_launch_errors_are_clear() {
    if let Some(d) = gpu() {
        launch_error_cases(&d);
    }
}

#[test]
fn gpu_fatbin_kernels_match_interpret_signatures() {
    if let Some(d) = gpu() {
        fatbin_signature_cases(&d);
    }
}

#[test]
fn gpu_graph_replay_equals_direct_launches() {
    if let Some(d) = gpu() {
        graph_cases(&d);
    }
}

/// The decode steps' CUDA graphs (src/ops/cuda/decode_graphs.rs) on real CUDA graphs and
/// cuBLASLt: replay gives the bits of eager launches, and steady-state steps allocate nothing.
/// (tests/decode_graphs.rs runs the same cases in interpret mode.)
#[test]
fn gpu_decode_graphs_replay_equals_eager_and_allocates_nothing() {
    if gpu().is_some() {
        decode_graph_cases::replay_equals_eager(&|| Device::cuda(0).unwrap(), false);
        decode_graph_cases::no_allocation_after_warm_up(&|| Device::cuda(0).unwrap());
    }
}

#[test]
fn gpu_tiny_models_match_cpu_backend() {
    if gpu().is_some() {
        model_cases(&|| Device::cuda(0).unwrap());
    }
}

// ---- the backward and optimizer kernels (issue 13; interpret mode: tests/backward_interpret.rs) ----

#[test]
fn gpu_backward_elementwise_kernels_match_cpu() {
    if let Some(d) = gpu() {
        backward_cases::add_cases(&d);
        backward_cases::swiglu_backward_cases(&d);
        backward_cases::rope_backward_cases(&d);
        backward_cases::master_cast_cases(&d);
    }
}

#[test]
fn gpu_backward_reductions_match_cpu_and_repeat_bit_for_bit() {
    if let Some(d) = gpu() {
        for (name, case) in [
            ("bias_backward", backward_cases::bias_backward_cases as fn(&Device) -> Vec<Vec<u32>>),
            ("rmsnorm_backward", backward_cases::rmsnorm_backward_cases),
            ("embedding_backward", backward_cases::embedding_backward_cases),
            ("adamw / sum_squares", backward_cases::adamw_cases),
        ] {
            let first = case(&d);
            assert!(case(&d) == first, "{name}: two runs on the GPU differ in their bits");
        }
    }
}

#[test]
fn gpu_backward_gemms_match_cpu() {
    if let Some(d) = gpu() {
        backward_cases::gemm_backward_cases(&d);
        backward_cases::backward_launch_error_cases(&d);
    }
}

/// NCCL with one rank on GPU 0 (a group of one is valid NCCL): the plumbing — id, init,
/// in-place all-reduce and broadcast on the device's stream, f32 and f64, the async error
/// check. The multi-rank arithmetic of the step is checked in-process by tests/train_dist.rs.
/// Skipped without libnccl unless SCALERL_REQUIRE_NCCL=1.
#[test]
fn nccl_one_rank_collectives() {
    use scalerl::device::nccl::{nccl_present, unique_id, NcclComm};
    use scalerl::device::DType;
    let Some(dev) = gpu() else { return };
    if !nccl_present() {
        assert!(std::env::var("SCALERL_REQUIRE_NCCL").as_deref() != Ok("1"), "SCALERL_REQUIRE_NCCL=1 but libnccl.so is not on the loader path");
        println!("skipped: no libnccl.so on the loader path");
        return;
    }
    let id = unique_id().unwrap();
    let mut comm = NcclComm::new(&dev, &id, 0, 1).unwrap();
    let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let b = dev.upload(&v).unwrap().typed(DType::F32);
    comm.all_reduce_sum_f32(&dev, &b).unwrap();
    comm.broadcast_f32(&dev, &b, 0).unwrap();
    assert_eq!(dev.download::<f32>(&b).unwrap(), v);
    let w = vec![1e15f64 + 1.0, -3.25];
    let c = dev.upload(&w).unwrap();
    comm.all_reduce_sum_f64(&dev, &c).unwrap();
    assert_eq!(dev.download::<f64>(&c).unwrap(), w);
    comm.check().unwrap();
}

/// The multi-GPU run's group with one rank (no rendezvous): its collectives, and the gradient
/// all-reduce of the CUDA backend through it (in place, in per-layer buckets on NCCL's stream) — what `scalerl train` under a
/// launcher runs, at world size 1.
#[test]
fn nccl_group_of_one_reduces_the_gradient_set() {
    use scalerl::dist::nccl::NcclGroup;
    use scalerl::dist::{Collective, Topology};
    use scalerl::ops::Ops;
    let Some(dev) = gpu() else { return };
    if !scalerl::device::nccl::nccl_present() {
        assert!(std::env::var("SCALERL_REQUIRE_NCCL").as_deref() != Ok("1"), "SCALERL_REQUIRE_NCCL=1 but libnccl.so is not on the loader path");
        println!("skipped: no libnccl.so on the loader path");
        return;
    }
    let ops = CudaOps::new(dev);
    let mut group = NcclGroup::new(&Topology::single(), ops.dev.clone(), std::time::Duration::from_secs(60)).unwrap();
    let model = Model::load(&fixture("tiny-qwen2-d64")).unwrap();
    let mut grads = ops.params_from_host(&model.weights, true).unwrap();
    // The whole set as the step's buckets: each layer, then the rest, then the join.
    let table = model.table().clone();
    for l in (0..table.num_layers()).rev() {
        ops.all_reduce_params_range(&mut group, &mut grads, table.layer_range(l)).unwrap();
    }
    for r in table.global_ranges() {
        ops.all_reduce_params_range(&mut group, &mut grads, r).unwrap();
    }
    ops.finish_all_reduce(&mut group).unwrap();
    assert_eq!(ops.params_to_host(&grads).unwrap().flat(), model.weights.flat());
    let mut x = vec![1.5f32, -2.0];
    group.all_reduce_sum(&mut x).unwrap();
    group.broadcast(&mut x, 0).unwrap();
    let mut y = vec![3e15f64 + 1.0];
    group.all_reduce_sum_f64(&mut y).unwrap();
    assert_eq!((x, y), (vec![1.5, -2.0], vec![3e15 + 1.0]));
}
