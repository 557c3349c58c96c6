use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    engine::cli::run(engine::cli::Cli::parse())
}
