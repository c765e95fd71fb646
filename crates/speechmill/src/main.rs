//! The `speechmill` command: thin wiring of configuration into the library crates.

mod cache;
mod cli;
mod config;
mod process;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand};

/// Exit codes, documented in the README and in `--help`.
pub mod exit {
    /// The run completed; rejections are results, not failures.
    pub const OK: u8 = 0;
    /// The run could not be carried out (output folder not writable, database failure).
    pub const FAILURE: u8 = 1;
    /// Bad usage or configuration.
    pub const USAGE: u8 = 2;
    /// The run completed, but some clips were rejected because speechmill failed on them
    /// (`internal_error`, `timeout`) rather than because of their content.
    pub const INTERNAL_REJECTIONS: u8 = 3;
    /// Interrupted (Ctrl-C); running the same command again resumes.
    pub const INTERRUPTED: u8 = 130;
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    let code = match cli.command {
        Command::Process(args) => process::run(args),
        Command::Config { command: ConfigCommand::Show(args) } => cli::show_config(args),
        Command::Cache { command } => cache::run(command),
        Command::Serve(args) => serve::serve(args),
        Command::Worker(args) => serve::worker(args),
        Command::Keys { command } => serve::keys(command),
        Command::Dlq { command } => serve::dlq(command),
    };
    ExitCode::from(code)
}
