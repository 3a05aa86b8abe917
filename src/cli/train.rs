//! `scalerl train`: GRPO training from a TOML run config (see `train::config`), the whole step on
//! its `device` (or `--device`); `--resume RUN_DIR` continues a run from its latest checkpoint;
//! `--record-rollouts` and `--replay-rollouts RUN_DIR` feed two runs (two devices) the same rollouts.
//! Without `--config`:
//! the embedded default run (`train::default_run`), a tiny model trained from scratch on a
//! synthetic addition task (SFT warm start, then GRPO) into `runs/default`.
use crate::train::default_run::{run_default, DefaultRunOptions};
use crate::engine::Backend;
use crate::train::config::RunConfig;
use crate::train::trainer::{train_from_file, train_rank, TrainOptions};
use crate::train::metrics::{phase_summary, read_metrics, METRICS_FILE};
use crate::train::plot::plot_run;
use anyhow::{bail, Context, Result};
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
    // Under a launcher with several processes: one rank of a data-parallel run over NCCL.
    let topo = crate::dist::Topology::from_env()?;
    if topo.world_size > 1 {
        return run_rank(a, &topo);
    }
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

/// How long a rank waits in one collective (and for the rendezvous) before it stops the run:
/// `SCALERL_COLLECTIVE_TIMEOUT` seconds, 1800 by default — longer than rank 0's validation
/// passes, during which the other ranks wait at the next step's first collective.
fn collective_timeout() -> Result<std::time::Duration> {
    let secs = match std::env::var("SCALERL_COLLECTIVE_TIMEOUT") {
        Ok(v) => v.trim().parse::<f64>().ok().filter(|s| *s > 0.0).with_context(|| format!("SCALERL_COLLECTIVE_TIMEOUT={v:?} is not a positive number of seconds"))?,
        Err(_) => 1800.0,
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// One process of a multi-GPU run: GPU LOCAL_RANK, joined to the others by NCCL.
fn run_rank(a: &TrainArgs, topo: &crate::dist::Topology) -> Result<()> {
    let config = a.config.as_ref().with_context(|| {
        format!("{:?} launched {} processes: a multi-GPU run needs --config (the embedded default runs on the CPU, in one process)", topo.launcher, topo.world_size)
    })?;
    let cfg = RunConfig::load(config)?;
    let device = a.device.unwrap_or(cfg.device);
    if !matches!(device, Backend::Cuda(_)) {
        bail!(
            "{:?} launched {} processes (this is rank {}): a multi-process run trains on GPUs (device = \"cuda\"), not on `{device}`; run one process for the CPU",
            topo.launcher,
            topo.world_size,
            topo.rank
        );
    }
    let dev = std::sync::Arc::new(crate::device::Device::cuda(topo.local_rank).with_context(|| format!("rank {}: GPU {} (LOCAL_RANK)", topo.rank, topo.local_rank))?);
    let mut group = crate::dist::nccl::NcclGroup::new(topo, dev, collective_timeout()?).with_context(|| format!("rank {} of {}", topo.rank, topo.world_size))?;
    if a.record_rollouts || a.replay_rollouts.is_some() {
        bail!("--record-rollouts and --replay-rollouts are for single-process runs (each rank holds only its share of a step's rollouts)");
    }
    let opts = TrainOptions { resume: a.resume.clone(), progress: !a.quiet, device: Some(Backend::Cuda(topo.local_rank)), ..TrainOptions::default() };
    let summary = train_rank(&cfg, &opts, &mut group)?;
    if topo.rank == 0 {
        eprintln!("trained {} steps on {} GPUs; last checkpoint: {}", summary.steps, topo.world_size, summary.last_checkpoint.as_ref().map_or("none".to_string(), |p| p.display().to_string()));
        write_plots(&summary.run_dir);
    }
    Ok(())
}
