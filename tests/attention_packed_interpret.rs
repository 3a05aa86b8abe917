//! Interpret-mode parity of the training attention over packed sequences (kernels/
//! attention_packed.cu, kernels/attention_packed_backward.cu) against the CPU reference on every
//! thread schedule, its determinism (bit-identical results across two runs and across the four
//! schedules), the launchers' refusals of bad buffers, and the wiring through `CudaOps`
//! (packed_batch, attention_packed, attention_packed_backward). The cases live in
//! tests/common/packed_cases.rs (written for any `Device`). CI also runs this file under
//! AddressSanitizer.
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
#[path = "common/packed_cases.rs"]
mod packed_cases;
use kernel_cases::{random_bf16, to_f32};
use packed_cases::*;
use scalerl::device::{Device, Schedule};
use scalerl::model::{Architecture, ModelConfig};
use scalerl::ops::cpu::CpuOps;
use scalerl::ops::cuda::CudaOps;
use scalerl::ops::Ops;

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

#[test]
fn packed_attention_matches_cpu_and_is_deterministic() {
    let mut first: Option<Vec<Bits>> = None;
    for schedule in SCHEDULES {
        let bits = packed_attention_cases(&Device::interpret_with(schedule));
        match &first {
            None => first = Some(bits),
            Some(f) => {
                for (ci, (a, b)) in f.iter().zip(&bits).enumerate() {
                    for (name, same) in [("out", a.out == b.out), ("lse", a.lse == b.lse), ("dq", a.dq == b.dq), ("dk", a.dk == b.dk), ("dv", a.dv == b.dv)] {
                        assert!(same, "packed case {ci} {:?}: {name} under {schedule:?} differs from the sequential schedule's bits", CASES[ci]);
                    }
                }
            }
        }
    }
}

#[test]
fn packed_attention_refuses_bad_buffers() {
    packed_launch_error_cases(&Device::interpret());
}

/// The 1.5B model's attention shapes (12 heads over 2 KV heads, head_dim 128), tiny otherwise.
fn config() -> ModelConfig {
    ModelConfig {
        arch: Architecture::Qwen2,
        hidden_size: 1536,
        intermediate_size: 64,
        num_layers: 1,
        num_heads: 12,
        num_kv_heads: 2,
        head_dim: 128,
        vocab_size: 50,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        tie_word_embeddings: false,
        qkv_bias: true,
        max_position_embeddings: 4096,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// `CudaOps` runs the packed attention and its backward as the transformer calls them (tensors
/// from `upload`/`zeros`, the LSE sized for bf16 and replaced by an f32 one), matching `CpuOps`
/// on the same bf16 values; the batch carries positions 0.. per sequence; paged ops refuse it.
#[test]
fn cuda_ops_packed_attention_matches_cpu_ops() {
    let c = config();
    let (nh, nkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
    let seqs: [&[u32]; 3] = [&[1; 70], &[2; 5], &[3; 33]];
    let t: usize = seqs.iter().map(|s| s.len()).sum();
    let cuda = CudaOps::new(Device::interpret());
    let cpu = CpuOps;
    let bf = |n: usize, seed: u64, scale: f32| to_f32(&random_bf16(n, seed, scale));
    let (q, k, v, dout) = (bf(t * nh * d, 31, 4.0), bf(t * nkv * d, 32, 1.0), bf(t * nkv * d, 33, 1.0), bf(t * nh * d, 34, 1.0));

    let cb = cpu.packed_batch(&c, &seqs).unwrap();
    let (mut out_c, mut lse_c) = (cpu.zeros(t * nh * d).unwrap(), cpu.zeros(t * nh).unwrap());
    cpu.attention_packed(&cb, &q, &k, &v, &mut out_c, &mut lse_c, &c).unwrap();

    let gb = cuda.packed_batch(&c, &seqs).unwrap();
    let positions: Vec<i32> = cuda.dev.download(&gb.meta.positions).unwrap();
    let want_pos: Vec<i32> = seqs.iter().flat_map(|s| 0..s.len() as i32).collect();
    assert_eq!(positions[..t], want_pos[..], "packed batch positions");
    let cu: Vec<i32> = cuda.dev.download(&gb.packed.as_ref().unwrap().plan.cu_seqlens).unwrap();
    assert_eq!(cu[..4], [0, 70, 75, 108], "cu_seqlens");
    let up = |x: &[f32]| cuda.upload(x).unwrap();
    let (gq, gk, gv, gdo) = (up(&q), up(&k), up(&v), up(&dout));
    let (mut out_g, mut lse_g) = (cuda.zeros(t * nh * d).unwrap(), cuda.zeros(t * nh).unwrap());
    cuda.attention_packed(&gb, &gq, &gk, &gv, &mut out_g, &mut lse_g, &c).unwrap();
    let out = cuda.download(&out_g).unwrap();
    let lse: Vec<f32> = cuda.dev.download(&lse_g).unwrap();
    assert_eq!(lse.len(), t * nh, "the LSE is f32 [T, heads] on the CUDA backend");
    for (i, (g, w)) in out.iter().zip(&out_c).enumerate() {
        assert!((g - w).abs() <= 1e-2 + 1e-2 * w.abs(), "out[{i}] = {g} vs cpu {w}");
    }
    for (i, (g, w)) in lse.iter().zip(&lse_c).enumerate() {
        assert!((g - w).abs() <= 1e-4 + 1e-5 * w.abs(), "lse[{i}] = {g} vs cpu {w}");
    }

    // Backward: each backend from its own forward (the CUDA one's out is bf16).
    let (mut dq_c, mut dk_c, mut dv_c) = (cpu.zeros(t * nh * d).unwrap(), cpu.zeros(t * nkv * d).unwrap(), cpu.zeros(t * nkv * d).unwrap());
    cpu.attention_packed_backward(&cb, &q, &k, &v, &out, &lse, &dout, &mut dq_c, &mut dk_c, &mut dv_c, &c).unwrap();
    let (mut dq_g, mut dk_g, mut dv_g) = (cuda.zeros(t * nh * d).unwrap(), cuda.zeros(t * nkv * d).unwrap(), cuda.zeros(t * nkv * d).unwrap());
    cuda.attention_packed_backward(&gb, &gq, &gk, &gv, &out_g, &lse_g, &gdo, &mut dq_g, &mut dk_g, &mut dv_g, &c).unwrap();
    for (name, g, w) in [("dq", &dq_g, &dq_c), ("dk", &dk_g, &dk_c), ("dv", &dv_g, &dv_c)] {
        let g = cuda.download(g).unwrap();
        let rms = (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt();
        for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
            assert!((a - b).abs() <= 5e-2 * rms + 2e-2 * b.abs(), "{name}[{i}] = {a} vs cpu {b}");
        }
    }

    // The paged ops refuse a packed batch (its block tables are placeholders).
    let mut cache = cuda.new_cache(&c, 8, 16).unwrap();
    let e = cuda.attention_paged(&gb, &cache, 0, &gq, &mut out_g, &c).unwrap_err();
    assert!(format!("{e:#}").contains("packed batch"), "{e:#}");
    let e = cuda.kv_write(&gb, &mut cache, 0, &gk, &gv, None, &c).unwrap_err();
    assert!(format!("{e:#}").contains("packed batch"), "{e:#}");
}
