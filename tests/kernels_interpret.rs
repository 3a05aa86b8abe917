//! Interpret-mode parity of every CUDA kernel against the CPU reference, on every thread
//! schedule: the cases of tests/common/kernel_cases.rs (random inputs, ragged shapes, outputs
//! poisoned with NaN before the launch so an unwritten element fails), plus what only the
//! interpreter can check. CI also runs this file under AddressSanitizer.
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
use kernel_cases::*;
use scalerl::ops::cuda::{self as k, TokenMeta};
use scalerl::device::{Device, Schedule};

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

fn on_every_schedule(case: fn(&Device)) {
    for schedule in SCHEDULES {
        case(&Device::interpret_with(schedule));
    }
}

#[test]
fn every_kernel_is_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    for n in [
        "rmsnorm_residual_bf16",
        "rope_qk_bf16",
        "silu_mul_bf16",
        "embedding_gather_bf16",
        "kv_cache_write_bf16",
        "cast_f32_to_bf16",
        "cast_bf16_to_f32",
        "paged_attention_bf16",
        "attention_decode_split_bf16_d64",
        "attention_decode_split_bf16_d128",
        "attention_decode_combine",
        "prefill_attention_d64_bf16",
        "prefill_attention_d128_bf16",
        "sample_f32",
        "sample_bf16",
        "split_cols_bf16",
        "concat_cols_bf16",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn rmsnorm_residual_matches_cpu() {
    on_every_schedule(rmsnorm_cases);
}

#[test]
fn rope_qk_with_bias_matches_cpu() {
    on_every_schedule(rope_cases);
}

#[test]
fn silu_mul_matches_cpu() {
    on_every_schedule(silu_mul_cases);
}

#[test]
fn split_and_concat_cols_are_exact() {
    on_every_schedule(split_cols_cases);
}

#[test]
fn embedding_gather_matches_cpu() {
    on_every_schedule(embedding_cases);
    // An id outside the table is a device assert (a clear launch error), not a wild read.
    // (On a GPU an assert poisons the whole context, so only the interpreter checks this.)
    let dev = Device::interpret();
    let (bi, bt) = (dev.upload(&[3i32]).unwrap(), dev.upload(&random_bf16(3 * 8, 1, 1.0)).unwrap());
    let bo = dev.alloc(16).unwrap();
    let err = k::embedding_gather(&dev, &bi, &bt, &bo, 1, 8, 3).unwrap_err().to_string();
    assert!(err.contains("assert"), "{err}");
}

#[test]
fn casts_round_to_nearest_even_like_half() {
    on_every_schedule(cast_cases);
}

#[test]
fn kv_cache_write_matches_cpu() {
    on_every_schedule(kv_cache_write_cases);
}

#[test]
fn paged_attention_matches_cpu() {
    on_every_schedule(paged_attention_cases);
}

#[test]
fn gemm_matches_cpu_matmul() {
    gemm_cases(&Device::interpret());
    gemm_odd_cases(&Device::interpret());
}

#[test]
fn launch_errors_are_clear() {
    launch_error_cases(&Device::interpret());
}

#[test]
fn launchers_refuse_bad_shapes() {
    let dev = Device::interpret();
    let setup = paged_setup(&[(0, 5)], 4, 1);
    let meta = setup.meta(&dev, 4);
    let small = dev.alloc(8).unwrap();
    let q = dev.alloc(5 * 2 * 8 * 2).unwrap();
    // A cache too small for the table's blocks.
    let err =
        k::paged_attention(&dev, &q, &small, &small, &q, &meta, setup.num_blocks, 2, 1, 8).unwrap_err().to_string();
    assert!(err.contains("k_cache"), "{err}");
    let err = k::paged_attention(&dev, &q, &small, &small, &q, &meta, 1, 2, 1, 8).unwrap_err().to_string();
    assert!(err.contains("block"), "{err}");
    // A table that does not cover the chunk.
    let e = TokenMeta::upload(&dev, &[(3, 4, &[0u32][..])], 4).err().unwrap().to_string();
    assert!(e.contains("covers"), "{e}");
}

/// The AddressSanitizer canary. In an ASan build (scripts/test.sh's last step: the interpret
/// C++ compiled with SCALERL_SANITIZE=address, the static libasan linked first), a kernel with a
/// planted out-of-bounds write (kernels/selftest/asan_canary.cu), launched through the device
/// layer in a child process, must die with ASan's report naming the kernel's file. Without it, a
/// build where ASan silently stopped working would pass every parity test unchecked.
/// Elsewhere the test says "skipped"; SCALERL_REQUIRE_ASAN=1 (set by that CI step) makes a
/// non-ASan build a failure.
#[test]
fn asan_reports_a_planted_out_of_bounds_write() {
    const CHILD: &str = "SCALERL_ASAN_CANARY_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let dev = Device::interpret();
        let n = 64;
        let out = dev.alloc(n * 4).unwrap();
        let cfg = scalerl::device::LaunchConfig { grid: scalerl::device::Dim3::x(1), block: scalerl::device::Dim3::x(n as u32 + 32), shared_bytes: 0 };
        dev.launch("asan_canary_oob_write", cfg, &[scalerl::device::Arg::Buf(&out), scalerl::device::Arg::I32(n as i32)]).unwrap();
        // Only reached when ASan did not stop the process.
        println!("canary launch returned");
        return;
    }
    if !cfg!(scalerl_asan) {
        assert!(
            std::env::var("SCALERL_REQUIRE_ASAN").as_deref() != Ok("1"),
            "SCALERL_REQUIRE_ASAN=1, but this test binary's kernels were not built with SCALERL_SANITIZE=address"
        );
        println!("skipped: not an AddressSanitizer build (SCALERL_SANITIZE=address)");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "asan_reports_a_planted_out_of_bounds_write", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the planted out-of-bounds write went unreported:\n{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(
        err.contains("AddressSanitizer: heap-buffer-overflow") && err.contains("asan_canary.cu"),
        "the child failed without ASan's report of the canary:\n{err}"
    );
}
