use std::process::ExitCode;

use clap::Parser;

/// The engine and workers allocate many small, short-lived values per step (JSON, rows,
/// messages); mimalloc serves them with fewer cycles than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    engine::cli::run(engine::cli::Cli::parse())
}
