//! `scalerl train`: GRPO training from a TOML run config (see `train::config`), on the CPU
//! backend; `--resume RUN_DIR` continues a run from its latest checkpoint.
use crate::train::trainer::{train_from_file, TrainOptions};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The run configuration (TOML; every key is documented in configs/deepscaler-1.5b-8k-16k-24k.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Continue the run in this directory from its latest checkpoint (weights, optimizer state,
    /// data cursor, step, stage).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No per-step progress line.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let summary = train_from_file(
        &a.config,
        &TrainOptions {
            resume: a.resume.clone(),
            progress: !a.quiet,
        },
    )?;
    eprintln!(
        "trained {} steps ({} in this run) in {}; last checkpoint: {}; prompts dropped for length: {}",
        summary.steps,
        summary.steps_run,
        summary.run_dir.display(),
        summary.last_checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string()),
        summary.prompts_dropped
    );
    Ok(())
}
