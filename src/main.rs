//! The `sluice` command: one binary for every role and tool.
#![forbid(unsafe_code)]

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
