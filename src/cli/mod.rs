//! The `scalerl` command line: one binary, one subcommand per job.
use clap::{Parser, Subcommand};

pub mod generate;
pub mod logits;
pub mod model_dir;
pub mod verify;

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
    /// Grade responses with the math reward (DeepScaleR's verifier): a JSONL file or one pair.
    Verify(verify::VerifyArgs),
}

/// Where the model runs: the f32 CPU reference, or the CUDA backend (bf16) in interpret mode
/// (its kernels run on the CPU with CUDA semantics; slow, for checking). The GPU joins later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Interpret,
}

impl Device {
    pub fn as_str(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Interpret => "interpret",
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::Verify(a) => verify::run(&a),
    }
}
