//! `scalerl plot RUN_DIR`: PNG charts of a training run's metrics (reward, response length,
//! clip ratio, validation pass@1; stage switches marked), see `train::plot`.
use crate::train::plot::plot_run;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PlotArgs {
    /// A training run directory (holding metrics.jsonl).
    pub run_dir: PathBuf,
    /// Where to write the PNGs (default: RUN_DIR/plots).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(a: &PlotArgs) -> Result<()> {
    for p in plot_run(&a.run_dir, a.out.as_deref())? {
        println!("{}", p.display());
    }
    Ok(())
}
