//! Interpret-mode parity of the split-KV decode attention (kernels/attention_decode.cu) on every
//! thread schedule: the cases of tests/common/decode_cases.rs (random inputs; output, LSE and
//! workspace poisoned with NaN; NaN K/V outside each context), the split heuristic and the
//! launcher's refusals. CI also runs this file under AddressSanitizer.
#[path = "common/decode_cases.rs"]
mod decode_cases;
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
use decode_cases::*;
use scalerl::device::{Device, Schedule};

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

#[test]
fn decode_kernels_are_compiled_in() {
    let names = scalerl::device::interpret::kernel_names();
    for n in ["attention_decode_split_bf16_d64", "attention_decode_split_bf16_d128", "attention_decode_combine"] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
}

#[test]
fn decode_attention_matches_cpu() {
    for schedule in SCHEDULES {
        decode_attention_cases(&Device::interpret_with(schedule));
    }
}

#[test]
fn decode_plan_picks_splits() {
    decode_plan_cases(&Device::interpret());
}

#[test]
fn decode_launcher_refuses_bad_input() {
    decode_error_cases(&Device::interpret());
}
