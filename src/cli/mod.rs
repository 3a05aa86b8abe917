//! The `scalerl` command line: one binary, one subcommand per job.
use clap::{Parser, Subcommand};

pub mod generate;
pub mod logits;
pub mod model_dir;

#[derive(Parser)]
#[command(name = "scalerl", version, about = "GRPO training of reasoning LLMs, with a fast long-context sampler")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate text from a prompt, streaming it as it is sampled.
    Generate(generate::GenerateArgs),
    /// Print the logits of a token sequence as JSON (for debugging and parity checks).
    Logits(logits::LogitsArgs),
}

/// Where the model runs. Only the CPU reference exists so far; the CUDA backend and its
/// interpret mode join this list when they land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(&a),
        Command::Logits(a) => logits::run(&a),
    }
}
