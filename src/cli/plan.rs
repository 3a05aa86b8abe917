//! `scalerl plan`: the memory plan of a run config on one GPU, per stage (see `train::plan`).
//! Needs only the model's config.json; exits non-zero, naming the stage and the shortfall, when a
//! stage does not fit.
use crate::model::ModelConfig;
use crate::train::config::RunConfig;
use crate::train::plan;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PlanArgs {
    /// The run configuration (TOML).
    #[arg(long)]
    pub config: PathBuf,
    /// Device memory in GiB (an H100 80GB: 80; an H200: 141).
    #[arg(long, default_value_t = 80.0)]
    pub gpu_mem_gib: f64,
}

pub fn run(a: &PlanArgs) -> Result<()> {
    if !(a.gpu_mem_gib > 0.0 && a.gpu_mem_gib.is_finite()) {
        bail!("--gpu-mem-gib must be a positive number of GiB");
    }
    let cfg = RunConfig::load(&a.config)?;
    let model = ModelConfig::from_file(&cfg.model.join("config.json"))?;
    let bytes = (a.gpu_mem_gib * (1u64 << 30) as f64) as u64;
    let plans = plan::plan(&model, &cfg, bytes);
    print!("{}", plan::format(&model, &plans, bytes));
    if let Some(p) = plans.iter().find(|p| p.shortfall.is_some()) {
        let (what, b) = p.shortfall.as_ref().unwrap();
        bail!(
            "stage {} (responses up to {} tokens) does not fit in {} GiB: {what} needs {:.2} GiB more",
            p.stage,
            p.max_response_len,
            a.gpu_mem_gib,
            *b as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}
