//! The `scalerl` command line: one binary, one subcommand per job.
use clap::{Parser, Subcommand};

pub mod data;
pub mod eval;
pub mod generate;
pub mod logits;
pub mod model_dir;
pub mod plan;
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
    /// The memory plan of a run config on one GPU, per stage; fails when a stage does not fit.
    Plan(plan::PlanArgs),
    /// Training data tools: dedup, decontaminate against benchmarks, filter ungradable golds, stats.
    Data(data::DataArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Generate(a) => generate::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Logits(a) => logits::run(&a),
        Command::Verify(a) => verify::run(&a),
        Command::Train(a) => train::run(&a),
        Command::Plot(a) => plot::run(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Data(a) => data::run(&a),
    }
}
