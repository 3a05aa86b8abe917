//! Per-step training metrics, one JSON object per line in `run_dir/metrics.jsonl`, appended and
//! flushed after every step. The reader tolerates a truncated last line (a crash mid-write);
//! on resume `MetricsLog::open_for_resume` drops the records of steps the checkpoint does not
//! cover, so the file stays one record per step.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";

/// Time and throughput of one phase of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    /// Wall-clock seconds.
    pub secs: f64,
    /// Tokens processed (generated for rollout; scored for logprobs/update; 0 for verify).
    pub tokens: u64,
    /// tokens / secs (0 when secs is 0).
    pub tokens_per_s: f64,
}

impl PhaseTime {
    pub fn new(secs: f64, tokens: u64) -> Self {
        PhaseTime { secs, tokens, tokens_per_s: if secs > 0.0 { tokens as f64 / secs } else { 0.0 } }
    }
}

/// Mean response length in tokens, split by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseLens {
    pub all: f64,
    /// `None` when no response of that kind.
    pub correct: Option<f64>,
    pub incorrect: Option<f64>,
}

impl ResponseLens {
    /// From (length, correct) pairs.
    pub fn from_samples(samples: &[(usize, bool)]) -> Self {
        let mean = |f: &dyn Fn(bool) -> bool| {
            let v: Vec<f64> = samples.iter().filter(|(_, c)| f(*c)).map(|(l, _)| *l as f64).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        ResponseLens { all: mean(&|_| true).unwrap_or(0.0), correct: mean(&|c| c), incorrect: mean(&|c| !c) }
    }
}

/// Validation results on one benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationMetrics {
    pub benchmark: String,
    /// Updates (steps) applied to the weights validated: 0 for `validation.at_start`.
    #[serde(default)]
    pub after_steps: usize,
    /// pass@1 averaged over the n samples per problem.
    pub pass_at_1: f64,
    pub n: usize,
    pub response_len_mean: f64,
    pub clip_ratio: f64,
    pub secs: f64,
}

/// Everything logged for one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// 0-based optimizer step.
    pub step: usize,
    /// Stage index and its budget / group size.
    pub stage: usize,
    pub max_response_len: usize,
    pub n: usize,
    /// Data epoch (from the cursor).
    pub epoch: u64,
    pub reward_mean: f64,
    /// Share of responses graded correct.
    pub accuracy: f64,
    pub response_len: ResponseLens,
    /// Share of responses cut at the budget (no EOS within max_response_len).
    pub clip_ratio: f64,
    /// Prompts dropped for length so far, and groups with zero reward variance this step.
    pub prompts_dropped: usize,
    pub zero_variance_groups: usize,
    /// Loss parts (token means as `GrpoOutput` gives them), averaged over mini-batches.
    pub pg_loss: f64,
    pub kl: f64,
    pub entropy: f64,
    /// Share of tokens whose ratio was clipped (pg_clipfrac).
    pub clip_frac: f64,
    /// Mean logp_old − logp (ppo_kl).
    pub approx_kl: f64,
    pub grad_norm: f64,
    pub lr: f64,
    /// Optimizer updates skipped for a non-finite gradient.
    pub skipped_updates: usize,
    /// |rollout log-prob − recomputed old log-prob| over the step's response tokens: the
    /// numerical gap between the sampler's and the trainer's paths (verl reports the same).
    #[serde(default)]
    pub logprob_gap: LogProbGap,
    /// Peak device memory (bytes held through the device layer) in each phase; absent on the
    /// CPU reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory: Option<PhaseMemory>,
    pub rollout: PhaseTime,
    pub verify: PhaseTime,
    pub logprobs: PhaseTime,
    pub update: PhaseTime,
    /// Whole step, wall-clock seconds.
    pub step_secs: f64,
    /// Validations run during this step's record: before it (`at_start`, on step 0) and after
    /// it (every `validation.every` steps); `after_steps` says which.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<ValidationMetrics>,
}

/// Peak device bytes of each phase of a step (see `MetricsLog` and the memory plan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseMemory {
    pub rollout: usize,
    pub logprobs: usize,
    pub update: usize,
}

/// The gap between two sets of per-token log-probs of the same tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LogProbGap {
    pub mean: f64,
    pub max: f64,
}

impl LogProbGap {
    /// Over every token of every sample (`a[i]` and `b[i]` for sample i, the same lengths).
    pub fn between(a: &[Vec<f32>], b: &[Vec<f32>]) -> LogProbGap {
        let (sum, n, max) = Self::parts(a, b);
        LogProbGap { mean: if n == 0 { 0.0 } else { sum / n as f64 }, max }
    }

    /// Σ|a − b|, the token count and max|a − b| (what ranks combine).
    pub fn parts(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, usize, f64) {
        let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.iter().zip(y) {
                let d = (*p as f64 - *q as f64).abs();
                // NaN stays visible (a NaN gap is a broken path, not a small one).
                max = if d.is_nan() || max.is_nan() { f64::NAN } else { max.max(d) };
                sum += d;
                n += 1;
            }
        }
        (sum, n, max)
    }
}

/// `metrics.jsonl` opened for appending.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creates) `path` for appending; a truncated last line is cut off first.
    pub fn open(path: &Path) -> Result<MetricsLog> {
        Self::open_for_resume(path, usize::MAX)
    }

    /// Opens `path` for a run resuming at `next_step`: records with `step >= next_step` (logged
    /// after the checkpoint was taken) and a truncated last line are removed.
    pub fn open_for_resume(path: &Path, next_step: usize) -> Result<MetricsLog> {
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let (records, truncated) = parse_metrics(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let keep: Vec<&StepMetrics> = records.iter().filter(|r| r.step < next_step).collect();
            let unterminated = !text.is_empty() && !text.ends_with('\n');
            if truncated || unterminated || keep.len() != records.len() {
                let mut text = String::new();
                for r in keep {
                    text.push_str(&serde_json::to_string(r)?);
                    text.push('\n');
                }
                let tmp = path.with_extension("jsonl.tmp");
                std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
                std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
            }
        } else if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    /// Appends one record as a JSON line and flushes it to the OS.
    pub fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let mut line = serde_json::to_string(m)?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).with_context(|| format!("cannot append to {}", self.path.display()))?;
        self.file.flush().with_context(|| format!("cannot flush {}", self.path.display()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every record; returns whether a truncated (unparsable, unterminated) last line was
/// ignored. A bad line elsewhere is an error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<(Vec<StepMetrics>, bool)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_metrics(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// As `read_metrics`, from text (errors name the line, not the file).
pub fn parse_metrics(text: &str) -> Result<(Vec<StepMetrics>, bool)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        match serde_json::from_str::<StepMetrics>(line) {
            Ok(m) => out.push(m),
            // The last line, cut by a crash mid-write.
            Err(_) if i + 1 == lines.len() && !raw.ends_with('\n') => return Ok((out, true)),
            Err(e) => return Err(anyhow!("line {}: invalid metrics record: {e}", i + 1)),
        }
    }
    Ok((out, false))
}

/// The clip-ratio history by step (for `RunConfig::stage_at`); steps missing from the records
/// get 0.
pub fn clip_history(records: &[StepMetrics]) -> Vec<f64> {
    let n = records.iter().map(|r| r.step + 1).max().unwrap_or(0);
    let mut h = vec![0.0; n];
    for r in records {
        h[r.step] = r.clip_ratio;
    }
    h
}

/// One line of mean time per step by phase (and tokens/s where the phase counts tokens), over
/// `records`: what a finished run prints so its cost is visible without opening the metrics.
pub fn phase_summary(records: &[StepMetrics]) -> String {
    if records.is_empty() {
        return "no steps".to_string();
    }
    let n = records.len() as f64;
    let mean = |f: &dyn Fn(&StepMetrics) -> f64| records.iter().map(f).sum::<f64>() / n;
    let phase = |name: &str, p: &dyn Fn(&StepMetrics) -> PhaseTime| {
        let ms = mean(&|r| p(r).secs) * 1e3;
        let tokens: u64 = records.iter().map(|r| p(r).tokens).sum();
        let secs: f64 = records.iter().map(|r| p(r).secs).sum();
        if tokens > 0 && secs > 0.0 {
            format!("{name} {ms:.1} ms ({:.0} tok/s)", tokens as f64 / secs)
        } else {
            format!("{name} {ms:.1} ms")
        }
    };
    format!(
        "per step: {}, {}, {}, {}; whole step {:.1} ms",
        phase("rollout", &|r| r.rollout),
        phase("verify", &|r| r.verify),
        phase("log-probs", &|r| r.logprobs),
        phase("update", &|r| r.update),
        mean(&|r| r.step_secs) * 1e3
    )
}
