//! Interpret-mode tests of the device sampler (kernels/sample.cu) against the CPU reference, on
//! every thread schedule: the same token and log-prob bits from the same logits and counter,
//! ties, −∞/NaN rows, and a chi-square test of its frequencies against the exact truncated
//! softmax. CI also runs this file under AddressSanitizer (scripts/test.sh).
#[path = "common/sample_cases.rs"]
mod sample_cases;
use sample_cases::*;
use scalerl::device::{Device, Schedule};
use scalerl::engine::sampler::SamplingParams;

/// A fixed order hides some missing-barrier races; two random orders expose them.
const SCHEDULES: [Schedule; 4] = [Schedule::Sequential, Schedule::Reverse, Schedule::Random(1), Schedule::Random(2)];

fn on_every_schedule(case: fn(&Device)) {
    for schedule in SCHEDULES {
        case(&Device::interpret_with(schedule));
    }
}

#[test]
fn device_draws_match_the_cpu_sampler() {
    on_every_schedule(parity_cases);
}

#[test]
fn ties_and_the_uniforms_extremes_match_the_cpu_sampler() {
    on_every_schedule(tie_cases);
}

#[test]
fn a_real_vocabulary_row_matches_the_cpu_sampler() {
    // V = 151,936 (1024 threads a row), every cut active, on one schedule (a row is ~10 passes).
    let v = 151_936;
    let mut logits = random_logits(v, 3, 2.5);
    logits.extend(random_logits(v, 4, 6.0));
    let p = SamplingParams { temperature: 0.6, top_k: 500, top_p: 0.95, min_p: 0.001, seed: 9, ..Default::default() };
    let q = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 9, ..Default::default() };
    check_rows(&Device::interpret_with(Schedule::Random(3)), v, &logits, &[p.draw(100), q.draw(101)], "V 151936");
}

#[test]
fn bad_rows_are_errors_naming_row_and_column() {
    error_cases(&Device::interpret());
}

/// Fixed logits, 20,000 draws each (positions 0..20,000 of one seed), against the exact
/// truncated softmax. Critical values: the 0.999 quantiles of chi-square at df = kept − 1
/// (df 2: 13.816, df 5: 20.515, df 6: 22.458); the seeds are fixed, so a pass is reproducible.
#[test]
fn sampled_frequencies_follow_the_truncated_softmax() {
    let dev = Device::interpret_with(Schedule::Random(1));
    let logits = [2.0f32, 1.5, 1.5, 1.0, 0.6, 0.2, -0.4, -1.0, f32::NEG_INFINITY, -2.5, 0.9, -0.1];
    let n = 20_000;
    let p = |t, top_k, top_p, min_p| SamplingParams { temperature: t, top_k, top_p, min_p, seed: 77, ..Default::default() };
    // All three cuts: min-p drops tokens 7 and 9, top-k 8 drops token 6, top-p 0.93 keeps
    // {0, 1, 2, 3, 10, 4} (their running share passes 0.93 at 0.940; before token 4 it is 0.881).
    let a = chi_square_case(&dev, &logits, p(0.8, 8, 0.93, 0.03), n, 5, 20.515);
    // top-k 2 with the 2nd and 3rd tied: both kept.
    let b = chi_square_case(&dev, &logits, p(1.0, 2, 1.0, 0.0), n, 2, 13.816);
    // min-p alone: p ≥ 0.1 p_max keeps {0, 1, 2, 3, 10, 4, 5}.
    let c = chi_square_case(&dev, &logits, p(0.8, 0, 1.0, 0.1), n, 6, 22.458);
    println!("chi-square: {a:.2} (df 5), {b:.2} (df 2), {c:.2} (df 6)");
}
