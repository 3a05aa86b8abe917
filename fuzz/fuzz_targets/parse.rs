//! Fuzz target: arbitrary UTF-8 through the math parser and the grader.
//! Any panic, stack overflow, hang (libFuzzer `-timeout`) or memory blow-up
//! (`-rss_limit_mb`) is a bug: the reward must answer parse_error/timeout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scalerl::reward::{check_answer, fuzz_parse, grade, Gold, RewardConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // The parser alone (normalize → lex → parse → canonical form).
    fuzz_parse(s);
    // Split the input into an answer and a gold at the first tab, so the
    // fuzzer also explores comparisons between two arbitrary expressions.
    let (answer, gold) = s.split_once('\t').unwrap_or((s, "1"));
    let cfg = RewardConfig::default();
    let _ = check_answer(answer, &Gold::from(gold), &cfg);
    let _ = check_answer(gold, &Gold::from(answer), &cfg);
    // The whole grader, with the input as the response and inside a box.
    let _ = grade(s, &Gold::from(gold), &cfg);
    let _ = grade(
        &format!("</think>\\boxed{{{answer}}}"),
        &Gold::Any(vec![gold.to_string(), answer.to_string()]),
        &cfg,
    );
});
