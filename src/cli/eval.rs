//! `scalerl eval`: pass@1 / pass@n on DeepScaleR's test sets, with every sample written to
//! `--out` and interrupted runs resumed from there.
use super::model_dir::LoadedModel;
use crate::engine::Backend;
use crate::engine::GenerateOptions;
use crate::eval::{self, output, Benchmark, EvalOptions, Progress, SampleRecord};
use crate::model::ChatTemplate;
use crate::reward::RewardConfig;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// A DeepScaleR test file (JSON list of records with `problem` and `answer`); repeat for
    /// several benchmarks, each named after its file stem.
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Samples per problem.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep only tokens with p ≥ min_p · p_max (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Response budget in tokens; a response cut there counts as wrong.
    #[arg(long, default_value_t = 32768)]
    pub max_response_len: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Chat template: model, r1-distill or r1-distill-think. Default: the model's own if it has
    /// one, else r1-distill.
    #[arg(long)]
    pub chat_template: Option<ChatTemplate>,
    /// Output directory: samples.jsonl, results.json, results.csv (and run.json, the settings).
    /// A directory holding an interrupted run is resumed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only the first k problems of each file.
    #[arg(long)]
    pub max_problems: Option<usize>,
    /// Most sequences per generation batch (whole problems: at least one problem's n samples).
    /// The KV cache of a batch is reserved up front for its full budget: lower it when memory
    /// is short.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Tokens per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// Backend: cpu (the f32 reference), cuda / cuda:N (bf16, the CUDA kernels), or interpret
    /// (the CUDA kernels run on the CPU with CUDA semantics; slow, for checking).
    #[arg(long, default_value = "cpu", env = "SCALERL_DEVICE")]
    pub device: Backend,
}

/// The settings a resumed run must share with the run it continues (written as run.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunSettings {
    n: usize,
    temperature: f32,
    top_p: f32,
    top_k: usize,
    /// Absent in the run.json of runs made before min-p existed (which sampled without it).
    #[serde(default)]
    min_p: f32,
    max_response_len: usize,
    seed: u64,
    chat_template: String,
    require_think_close: bool,
}

const RUN_FILE: &str = "run.json";

fn check_settings(dir: &Path, s: &RunSettings) -> Result<()> {
    let p = dir.join(RUN_FILE);
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            let old: RunSettings = serde_json::from_str(&text)
                .with_context(|| format!("{}: not the settings of an eval run", p.display()))?;
            if &old != s {
                bail!(
                    "{} holds a run with other settings ({}); use another --out or the same settings",
                    dir.display(),
                    serde_json::to_string(&old)?
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&p, serde_json::to_string_pretty(s)? + "\n")
                .with_context(|| format!("cannot write {}", p.display()))
        }
        Err(e) => bail!("cannot read {}: {e}", p.display()),
    }
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let benchmarks = a.data.iter().map(|p| Benchmark::load(p)).collect::<Result<Vec<_>>>()?;
    let lm = LoadedModel::load(&a.model, a.device)?;
    let chat_template = a.chat_template.unwrap_or_else(|| eval::default_chat_template(&lm.tokenizer));
    let opts = EvalOptions {
        n: a.n,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        min_p: a.min_p,
        max_response_len: a.max_response_len,
        seed: a.seed,
        prompt_template: eval::DEEPSCALER_PROMPT_TEMPLATE.to_string(),
        chat_template,
        stop_token_ids: lm.stop_token_ids(),
        reward: RewardConfig::default(),
        max_batch_sequences: a.batch_size,
        generate: GenerateOptions { block_size: a.block_size, ..GenerateOptions::default() },
        max_problems: a.max_problems,
    };
    if opts.n == 0 {
        bail!("--n must be at least 1");
    }
    let settings = RunSettings {
        n: a.n,
        temperature: a.temperature,
        top_p: a.top_p,
        top_k: a.top_k,
        min_p: a.min_p,
        max_response_len: a.max_response_len,
        seed: a.seed,
        chat_template: format!("{chat_template:?}"),
        require_think_close: opts.reward.require_think_close,
    };

    // Resume: keep the finished problems of an earlier run in --out.
    let mut writer = None;
    let mut previous = Vec::new();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        check_settings(dir, &settings)?;
        let path = dir.join(output::SAMPLES_FILE);
        previous = eval::finished_samples(output::read_samples(&path)?, a.n);
        writer = Some(output::SampleWriter::start(&path, &previous)?);
    }
    if !previous.is_empty() {
        let problems = previous.len() / a.n;
        eprintln!("resuming: {problems} finished problems found in {}", a.out.as_ref().unwrap().display());
    }

    // A live bar on a terminal; one line per problem when stderr goes to a log file.
    let on_terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} problems  {msg}  [{elapsed_precise}]")
            .expect("valid progress template"),
    );
    let on_problem = |p: &Progress, samples: &[SampleRecord]| -> Result<()> {
        if let Some(w) = writer.as_mut() {
            w.append(samples)?;
        }
        let stats = format!("{:.2} samples/s, running pass@1 {:.1}%", p.samples_per_s, p.running_pass_at_1 * 100.0);
        if on_terminal {
            bar.set_length(p.problems_total as u64);
            bar.set_position(p.problems_done as u64);
            bar.set_message(stats);
        } else {
            eprintln!("[{}/{} problems] {stats}, {:.0}s", p.problems_done, p.problems_total, p.elapsed_s);
        }
        Ok(())
    };
    let (results, _) = eval::evaluate_resumable(&lm.runtime, &lm.tokenizer, &benchmarks, &opts, previous, on_problem)?;
    bar.finish_and_clear();
    if let Some(dir) = &a.out {
        output::write_results(dir, &results)?;
    }
    let name = a.model.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    print!("{}", eval::format_table(&name, &results));
    Ok(())
}
