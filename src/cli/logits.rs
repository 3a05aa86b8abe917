//! `scalerl logits`: the logits of a token sequence as JSON, for parity checks.
use crate::engine::{Backend, Runtime};
use crate::model::Model;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct LogitsArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated token ids, e.g. 1,2,3.
    #[arg(long)]
    pub tokens: String,
    /// Print the logits of every position (default: the last one only).
    #[arg(long)]
    pub all_positions: bool,
    /// Backend: cpu (the f32 reference), cuda / cuda:N (bf16, the CUDA kernels), or interpret
    /// (the CUDA kernels run on the CPU with CUDA semantics; slow, for checking).
    #[arg(long, default_value = "cpu", env = "SCALERL_DEVICE")]
    pub device: Backend,
}

pub fn parse_token_list(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(|t| t.trim().parse::<u32>().with_context(|| format!("`{t}` in --tokens is not a token id")))
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        bail!("--tokens is empty");
    }
    Ok(ids)
}

pub fn run(a: &LogitsArgs) -> Result<()> {
    let tokens = parse_token_list(&a.tokens)?;
    let runtime = Runtime::new(a.device, Model::load(&a.model)?)?;
    let logits = runtime.sequence_logits(&tokens, a.all_positions)?;
    let first = if a.all_positions { 0 } else { tokens.len() - 1 };
    let positions: Vec<usize> = (first..tokens.len()).collect();
    let json = serde_json::json!({ "device": a.device.to_string(), "tokens": tokens, "positions": positions, "logits": logits });
    println!("{json}");
    Ok(())
}
