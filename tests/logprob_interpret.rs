//! Interpret-mode parity of the fused lm_head log-prob (kernels/logprob.cu) and the GRPO
//! per-token loss (kernels/grpo_loss.cu) against their CPU references on every thread schedule,
//! with results bit-identical across schedules and runs; the CudaOps wiring; the launchers'
//! refusals. The cases (and their tolerances) live in tests/common/logprob_cases.rs, written for
//! any `Device` (tests/gpu.rs runs them on a GPU). CI also runs this file under ASan.
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
#[path = "common/logprob_cases.rs"]
mod logprob_cases;
use half::bf16;
use kernel_cases::{random_bf16, to_f32};
use logprob_cases::*;
use scalerl::device::{Buffer, Device, Schedule};
use scalerl::ops::cuda::CudaOps;
use scalerl::ops::grpo::{GrpoConfig, GrpoTokens, LossAgg};
use scalerl::ops::{LogProbShape, Ops};

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

/// `cases` on every schedule: the same bits on each.
fn same_bits_on_every_schedule(what: &str, cases: fn(&Device) -> Vec<Vec<u32>>) {
    let first = cases(&Device::interpret_with(SCHEDULES[0]));
    for schedule in &SCHEDULES[1..] {
        let out = cases(&Device::interpret_with(*schedule));
        for (ci, (a, b)) in first.iter().zip(&out).enumerate() {
            assert!(a == b, "{what} case {ci}: results differ between schedules (Sequential vs {schedule:?})");
        }
    }
}

#[test]
fn logprob_kernels_are_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    for n in [
        "logprob_fwd_partials_bf16",
        "logprob_combine",
        "logprob_dlogits_bf16",
        "logprob_dweight_bf16",
        "logprob_dhidden_bf16",
        "logprob_scatter_rows_bf16",
        "grpo_token_loss",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

/// Forward and backward against the CPU reference, on every schedule.
#[test]
fn logprob_forward_and_backward_match_cpu() {
    same_bits_on_every_schedule("logprob", logprob_cases);
}

/// Every variant of the GRPO objective against the CPU reference, on every schedule.
#[test]
fn grpo_loss_matches_cpu_for_every_variant() {
    same_bits_on_every_schedule("GRPO loss", grpo_cases);
}

/// CudaOps::logprobs / logprobs_backward / grpo_loss against CpuOps on the same bf16 values:
/// scored rows picked out of a larger packed batch, d_hidden zero on the other rows, the lm_head
/// gradient accumulated in f32.
#[test]
fn cuda_ops_match_cpu_ops() {
    use scalerl::ops::cpu::CpuOps;
    let cuda = CudaOps::new(Device::interpret());
    let (total, h, v) = (50usize, 64usize, 300usize);
    let sh = LogProbShape { hidden: h, vocab: v, temperature: 0.6, chunk: 128 };
    let hidden: Vec<f32> = to_f32(&random_bf16(total * h, 41, 1.0));
    let lm_head: Vec<f32> = to_f32(&random_bf16(v * h, 42, 1.0));
    let rows: Vec<usize> = (0..total).filter(|r| r % 3 != 1).collect();
    let targets: Vec<u32> = rows.iter().map(|&r| ((r * 37) % v) as u32).collect();
    let want = CpuOps.logprobs(&hidden, &rows, &targets, &lm_head, sh).unwrap();
    let (bh, bw) = (cuda.upload(&hidden).unwrap(), cuda.upload(&lm_head).unwrap());
    let got = cuda.logprobs(&bh, &rows, &targets, &bw, sh).unwrap();
    check_close(&got.logp, &want.logp, "CudaOps::logprobs logp");
    check_close(&got.entropy, &want.entropy, "CudaOps::logprobs entropy");

    let n = rows.len();
    let (gl, ge) = upstream(n, 5);
    let dw0 = to_f32(&random_bf16(v * h, 43, 0.01));
    let (mut want_dh, mut want_dw) = (vec![f32::NAN; total * h], dw0.clone());
    CpuOps.logprobs_backward(&hidden, &rows, &targets, &lm_head, &want, &gl, Some(&ge), sh, &mut want_dh, &mut want_dw).unwrap();
    let mut dh = cuda.dev.upload(&vec![bf16::from_bits(0x7fc1); total * h]).unwrap();
    let mut dw = cuda.dev.upload(&dw0).unwrap();
    cuda.logprobs_backward(&bh, &rows, &targets, &bw, &got, &gl, Some(&ge), sh, &mut dh, &mut dw).unwrap();
    let got_dh = cuda.download(&dh).unwrap();
    for r in (0..total).filter(|r| r % 3 == 1) {
        assert!(got_dh[r * h..(r + 1) * h].iter().all(|&x| x == 0.0), "d_hidden row {r} (not scored) must be zero");
    }
    check_grad(&got_dh, &want_dh, 6e-3, "CudaOps d_hidden");
    let delta = |a: &[f32]| a.iter().zip(&dw0).map(|(x, y)| x - y).collect::<Vec<f32>>();
    check_grad(&delta(&cuda.dev.download::<f32>(&dw).unwrap()), &delta(&want_dw), 4e-3, "CudaOps d_lm_head");

    // The lm_head gradient accumulates in f32: a bf16 view (what DeviceParams holds) is refused.
    let mut dw16 = cuda.upload(&dw0).unwrap();
    let err = cuda.logprobs_backward(&bh, &rows, &targets, &bw, &got, &gl, Some(&ge), sh, &mut dh, &mut dw16).unwrap_err();
    assert!(format!("{err:#}").contains("f32"), "{err:#}");

    let b = grpo_batch(9);
    let x = GrpoTokens { seq_lens: &b.lens, logp: &b.logp, entropy: &b.entropy, old_logp: &b.old, ref_logp: Some(&b.reference), advantages: &b.adv };
    for cfg in [GrpoConfig::default(), GrpoConfig { dual_clip: Some(3.0), kl_coef: None, agg: LossAgg::SeqMeanTokenMean, ..Default::default() }] {
        grpo_check(&cuda.grpo_loss(&cfg, &x).unwrap(), &CpuOps.grpo_loss(&cfg, &x).unwrap(), "CudaOps::grpo_loss");
    }
    let short = GrpoTokens { logp: &b.logp[1..], ..x };
    let err = cuda.grpo_loss(&GrpoConfig::default(), &short).unwrap_err();
    assert!(format!("{err:#}").contains("logp"), "{err:#}");
}

/// The plan, the launchers and the Ops layer name what is wrong instead of launching.
#[test]
fn logprob_launchers_refuse_bad_inputs() {
    logprob_launch_error_cases(&Device::interpret());
    // The Ops layer checks rows and targets on the host.
    let sh = LogProbShape { hidden: 64, vocab: 300, temperature: 1.0, chunk: 128 };
    let cuda = CudaOps::new(Device::interpret());
    let hid = cuda.upload(&vec![0.5; 3 * 64]).unwrap();
    let lm = cuda.upload(&vec![0.1; 300 * 64]).unwrap();
    expect_err(cuda.logprobs(&hid, &[0, 3], &[1, 2], &lm, sh), "row 3 of 3");
    expect_err(cuda.logprobs(&hid, &[0, 1], &[1, 300], &lm, sh), "target 300");
    expect_err(cuda.logprobs(&hid, &[0, 1], &[1], &lm, sh), "2 rows with 1 targets");
    let fwd = cuda.logprobs(&hid, &[0, 1], &[1, 2], &lm, sh).unwrap();
    let mut dh = cuda.zeros(3 * 64).unwrap();
    let mut dw: Buffer = cuda.dev.upload(&vec![0f32; 300 * 64]).unwrap();
    expect_err(cuda.logprobs_backward(&hid, &[1, 1], &[1, 2], &lm, &fwd, &[1.0, 1.0], None, sh, &mut dh, &mut dw), "scored twice");
    expect_err(cuda.logprobs_backward(&hid, &[0, 1], &[1, 2], &lm, &fwd, &[1.0], None, sh, &mut dh, &mut dw), "d_logp has 1");
}
