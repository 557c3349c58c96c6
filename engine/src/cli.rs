//! The `switchyard` command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use connectors::Registry;

/// Switchyard: event-driven workflows over governed integrations.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check workflow definitions (YAML or JSON); `-` reads standard input.
    ///
    /// Exit status: 0 when every file is valid, 1 when any is not (every problem is printed as
    /// `file:line:col: path: message`), 2 when a file cannot be read.
    Validate {
        /// Definition files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the workflow definition format.
    Schema,
    /// List the built-in connectors and their actions.
    Connectors {
        /// Print the reference page `docs/connectors.md` instead of a plain list.
        #[arg(long)]
        markdown: bool,
    },
}

/// Exit status for invalid definitions.
const INVALID: u8 = 1;
/// Exit status for usage errors (clap uses the same for bad arguments).
const USAGE: u8 = 2;

/// Runs one invocation and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match cli.command {
        Command::Validate { files } => validate(&files, &mut stdout.lock(), &mut stderr.lock()),
        Command::Schema => {
            let _ = stdout
                .lock()
                .write_all(schemas::json_schema::workflow_schema_pretty().as_bytes());
            ExitCode::SUCCESS
        }
        Command::Connectors { markdown: true } => {
            let _ = stdout
                .lock()
                .write_all(connectors::registry::markdown(&Registry::builtin()).as_bytes());
            ExitCode::SUCCESS
        }
        Command::Connectors { markdown: false } => {
            let mut out = stdout.lock();
            for m in Registry::builtin().manifests() {
                let _ = writeln!(out, "{} ({})", m.name, m.title);
                for a in m.actions {
                    let _ = writeln!(
                        out,
                        "  {}.{:<24} {:<11} {}",
                        m.name,
                        a.name,
                        format!("{:?}", a.side_effect).to_lowercase(),
                        a.summary
                    );
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// Validates each file, printing problems to `out` and read failures to `err`.
pub fn validate(files: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let registry = Registry::builtin();
    let mut worst = 0u8;
    for file in files {
        let name = file.display().to_string();
        let text = if name == "-" {
            let mut buf = String::new();
            std::io::stdin().read_to_string(&mut buf).map(|_| buf)
        } else {
            std::fs::read_to_string(file)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(err, "{name}: cannot read: {e}");
                worst = worst.max(USAGE);
                continue;
            }
        };
        match schemas::validate::validate(&text, &registry) {
            Ok(wf) => {
                let _ = writeln!(out, "{name}: ok ({}, {} steps)", wf.name, wf.steps.len());
            }
            Err(problems) => {
                for p in &problems.0 {
                    let _ = writeln!(out, "{name}:{p}");
                }
                worst = worst.max(INVALID);
            }
        }
    }
    ExitCode::from(worst)
}
