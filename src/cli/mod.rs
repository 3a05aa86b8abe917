//! The `scalerl` command line: one binary, one subcommand per job.
use clap::{Parser, Subcommand};

pub mod data;
pub mod eval;
pub mod generate;
pub mod logits;
pub mod model_dir;
pub mod plot;
pub mod train;
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
    /// Evaluate a model on DeepScaleR's test sets: pass@1, pass@n, lengths, cut share.
    Eval(eval::EvalArgs),
    /// Print the logits of a token sequence as JSON (for debugging and parity checks).
    Logits(logits::LogitsArgs),
    /// Grade responses with the math reward (DeepScaleR's verifier): a JSONL file or one pair.
    Verify(verify::VerifyArgs),
    /// GRPO training (DeepScaleR recipe) from a TOML run config; --resume continues a run.
    Train(train::TrainArgs),
    /// PNG charts of a training run: reward, response length, clip ratio, validation.
    Plot(plot::PlotArgs),
    /// Training data tools: dedup, decontaminate against benchmarks, filter ungradable golds, stats.
    Data(data::DataArgs),
}

/// Where the model runs: the f32 CPU reference, or the CUDA backend (bf16, the hand-written
/// kernels) on the GPU (`cuda`) or in interpret mode (its kernels run on the CPU with CUDA
/// semantics; slow, for checking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
    Interpret,
}

impl Device {
    pub fn as_str(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Interpret => "interpret",
        }
    }

    /// The CUDA backend's device for `cuda`/`interpret`, None for the CPU backend. A machine
    /// without a GPU gets a "no GPU" error here, not a panic.
    pub fn cuda_backend_device(&self) -> anyhow::Result<Option<crate::device::Device>> {
        match self {
            Device::Cpu => Ok(None),
            other => crate::device::Device::from_name(other.as_str()).map(Some),
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::Verify(a) => verify::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Plot(a) => plot::run(&a),
        Command::Data(a) => data::run(&a),
    }
}
