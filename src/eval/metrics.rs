//! One graded sample, and the per-benchmark metrics computed from them.
use serde::{Deserialize, Serialize};

/// One sample, as written to `samples.jsonl` (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub benchmark: String,
    /// Index of the problem in its file.
    pub problem_index: usize,
    /// 0..n.
    pub sample_index: usize,
    /// The prompt text (chat template applied).
    pub prompt: String,
    pub response: String,
    /// The extracted boxed answer, if any.
    pub answer: Option<String>,
    pub reward: f32,
    /// The grader's reason (`correct`, `wrong`, `no_think_close`, `no_box`, …), or `cut` for a
    /// response cut at the length budget (always wrong).
    pub reason: String,
    /// Generated tokens (the stop token included).
    pub tokens: usize,
    /// `stop` or `length`.
    pub finish: String,
}

impl SampleRecord {
    /// Right answer, finished before the budget.
    pub fn is_correct(&self) -> bool {
        self.reward > 0.0 && self.reason == "correct" && !self.is_cut()
    }
    pub fn is_cut(&self) -> bool {
        self.finish == "length"
    }
}

/// Metrics of one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchmarkResult {
    pub benchmark: String,
    /// Problems with samples.
    pub problems: usize,
    /// Samples in all.
    pub samples: usize,
    /// Mean binary reward over problems × samples.
    pub pass_at_1: f64,
    /// Share of problems with at least one correct sample.
    pub pass_at_n: f64,
    /// Samples per problem (the largest count seen).
    pub n: usize,
    /// Mean response length (tokens) of the correct samples; None when there are none.
    pub mean_len_correct: Option<f64>,
    /// Mean response length (tokens) of the incorrect samples (cut ones included).
    pub mean_len_incorrect: Option<f64>,
    /// Share of samples cut at the length budget (finish = length).
    pub cut_share: f64,
}

fn mean(v: &[usize]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some(v.iter().sum::<usize>() as f64 / v.len() as f64)
    }
}

/// Computes the metrics of `benchmark` from its samples (other benchmarks' samples are skipped).
pub fn summarize(benchmark: &str, samples: &[SampleRecord]) -> BenchmarkResult {
    let mut per_problem: std::collections::BTreeMap<usize, (usize, bool)> = Default::default();
    let (mut correct_lens, mut wrong_lens) = (Vec::new(), Vec::new());
    let (mut total, mut correct, mut cut) = (0usize, 0usize, 0usize);
    for s in samples.iter().filter(|s| s.benchmark == benchmark) {
        total += 1;
        let ok = s.is_correct();
        let e = per_problem.entry(s.problem_index).or_insert((0, false));
        e.0 += 1;
        e.1 |= ok;
        if ok {
            correct += 1;
            correct_lens.push(s.tokens);
        } else {
            wrong_lens.push(s.tokens);
        }
        if s.is_cut() {
            cut += 1;
        }
    }
    let problems = per_problem.len();
    let solved = per_problem.values().filter(|p| p.1).count();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    BenchmarkResult {
        benchmark: benchmark.to_string(),
        problems,
        samples: total,
        pass_at_1: ratio(correct, total),
        pass_at_n: ratio(solved, problems),
        n: per_problem.values().map(|p| p.0).max().unwrap_or(0),
        mean_len_correct: mean(&correct_lens),
        mean_len_incorrect: mean(&wrong_lens),
        cut_share: ratio(cut, total),
    }
}

/// The results as CSV (a header and one row per benchmark; empty cells for missing lengths).
pub fn to_csv(results: &[BenchmarkResult]) -> String {
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_default();
    let mut s = String::from(
        "benchmark,problems,n,samples,pass_at_1,pass_at_n,mean_len_correct,mean_len_incorrect,cut_share\n",
    );
    for r in results {
        s += &format!(
            "{},{},{},{},{:.6},{:.6},{},{},{:.6}\n",
            r.benchmark,
            r.problems,
            r.n,
            r.samples,
            r.pass_at_1,
            r.pass_at_n,
            opt(r.mean_len_correct),
            opt(r.mean_len_incorrect),
            r.cut_share
        );
    }
    s
}

/// A table for the terminal: a DeepScaleR-blog-style row of pass@1 (%) per benchmark with the
/// average, then the details per benchmark.
pub fn format_table(model: &str, results: &[BenchmarkResult]) -> String {
    let mut s = String::new();
    let w = results.iter().map(|r| r.benchmark.len()).max().unwrap_or(0).max(9);
    s += &format!("{:<24}", "Model");
    for r in results {
        s += &format!(" | {:>w$}", r.benchmark);
    }
    s += " |       Avg\n";
    s += &format!("{:<24}", truncate(model, 24));
    for r in results {
        s += &format!(" | {:>w$.1}", r.pass_at_1 * 100.0);
    }
    let avg =
        if results.is_empty() { 0.0 } else { results.iter().map(|r| r.pass_at_1).sum::<f64>() / results.len() as f64 };
    s += &format!(" | {:>9.1}\n\n", avg * 100.0);
    s += &format!(
        "{:<w$} | {:>8} | {:>4} | {:>8} | {:>8} | {:>9} | {:>11} | {:>6}\n",
        "benchmark", "problems", "n", "pass@1", "pass@n", "len(ok)", "len(wrong)", "cut"
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into());
    for r in results {
        s += &format!(
            "{:<w$} | {:>8} | {:>4} | {:>7.1}% | {:>7.1}% | {:>9} | {:>11} | {:>5.1}%\n",
            r.benchmark,
            r.problems,
            r.n,
            r.pass_at_1 * 100.0,
            r.pass_at_n * 100.0,
            opt(r.mean_len_correct),
            opt(r.mean_len_incorrect),
            r.cut_share * 100.0
        );
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    let count = s.chars().count();
    if count <= n {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(count - (n - 1)).collect();
        format!("…{tail}")
    }
}
