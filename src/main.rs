use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    scalerl::util::alloc::keep_freed_memory();
    let cli = scalerl::cli::Cli::parse();
    match scalerl::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole cause chain: "cannot load ...: tensor `x` has shape ...".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
