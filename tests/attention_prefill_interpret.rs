//! Interpret-mode parity of the FlashAttention-2-style prefill attention (kernels/
//! attention_prefill.cu) against the CPU reference on every thread schedule, and the launcher's
//! refusals of bad buffers. The cases live in tests/common/prefill_cases.rs (written for any
//! `Device`). CI also runs this file under AddressSanitizer.
#[path = "common/kernel_cases.rs"]
mod kernel_cases;
#[path = "common/prefill_cases.rs"]
mod prefill_cases;
use prefill_cases::*;
use scalerl::device::{Device, Schedule};

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

#[test]
fn prefill_attention_matches_cpu() {
    for schedule in SCHEDULES {
        prefill_attention_cases(&Device::interpret_with(schedule));
    }
}

#[test]
fn prefill_attention_refuses_bad_buffers() {
    prefill_launch_error_cases(&Device::interpret());
}
