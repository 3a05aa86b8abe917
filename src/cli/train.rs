//! `scalerl train`: GRPO training from a TOML run config (see `train::config`), the whole step on
//! its `device` (or `--device`); `--resume RUN_DIR` continues a run from its latest checkpoint;
//! `--record-rollouts` and `--replay-rollouts RUN_DIR` feed two runs (two devices) the same rollouts.
//! Without `--config`:
//! the embedded default run (`train::default_run`), a tiny model trained from scratch on a
//! synthetic addition task (SFT warm start, then GRPO) into `runs/default`.
use crate::train::default_run::{run_default, DefaultRunOptions};
use crate::train::trainer::{train_from_file, TrainOptions};
use crate::train::metrics::{phase_summary, read_metrics, METRICS_FILE};
use crate::train::plot::plot_run;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Mean phase times and the charts of the finished run (RUN_DIR/plots). A failure here is
/// reported, not fatal: the run itself is done and checkpointed.
fn write_plots(run_dir: &Path) {
    if let Ok((recs, _)) = read_metrics(&run_dir.join(METRICS_FILE)) {
        eprintln!("{}", phase_summary(&recs));
    }
    match plot_run(run_dir, None) {
        Ok(_) => eprintln!("charts: {}", run_dir.join("plots").display()),
        Err(e) => eprintln!("warning: no charts: {e:#}"),
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The run configuration (TOML; every key is documented in configs/deepscaler-1.5b-8k-16k-24k.toml).
    /// Absent: the embedded default run (a tiny model from scratch on synthetic additions, on
    /// the CPU, into `runs/default`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in this directory from its latest checkpoint (weights, optimizer state,
    /// data cursor, step, stage).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No per-step progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Where the whole step runs, over the config's `device`: cpu, cuda, cuda:N or interpret.
    #[arg(long, requires = "config")]
    pub device: Option<crate::engine::Backend>,
    /// Append each step's graded rollouts to RUN_DIR/rollouts.jsonl.
    #[arg(long, requires = "config")]
    pub record_rollouts: bool,
    /// Replay the rollouts recorded (--record-rollouts) in this run directory instead of
    /// sampling: another device's updates on the same rollouts, to compare two devices.
    #[arg(long, requires = "config", value_name = "RUN_DIR")]
    pub replay_rollouts: Option<PathBuf>,
    /// The default run only (no --config): its run directory.
    #[arg(long, conflicts_with = "config")]
    pub run_dir: Option<PathBuf>,
    /// The default run only (no --config): its seed (model init, data, sampling).
    #[arg(long, conflicts_with = "config")]
    pub seed: Option<u64>,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let Some(config) = &a.config else {
        if a.resume.is_some() {
            anyhow::bail!("--resume needs the run's --config (a default run writes RUN_DIR/config.toml)");
        }
        let mut o = DefaultRunOptions { progress: !a.quiet, ..DefaultRunOptions::default() };
        if let Some(d) = &a.run_dir {
            o.run_dir = d.clone();
        }
        if let Some(s) = a.seed {
            o.seed = s;
        }
        let t = std::time::Instant::now();
        let s = run_default(&o)?;
        eprintln!(
            "default run: start accuracy {:.3} (after SFT), end accuracy {:.3} (after {} GRPO steps), held-out greedy; training reward {:.3} -> {:.3}; {:.0}s in all; run in {}",
            s.start_accuracy,
            s.end_accuracy,
            s.train.steps,
            s.reward_first,
            s.reward_last,
            t.elapsed().as_secs_f64(),
            s.train.run_dir.display()
        );
        write_plots(&s.train.run_dir);
        return Ok(());
    };
    let summary = train_from_file(
        config,
        &TrainOptions {
            resume: a.resume.clone(),
            progress: !a.quiet,
            device: a.device,
            record_rollouts: a.record_rollouts,
            replay_rollouts: a.replay_rollouts.clone(),
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
    write_plots(&summary.run_dir);
    Ok(())
}
