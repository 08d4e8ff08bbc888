//! The `fruits` binary: parse, dispatch, print an error once.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Featurize(args) => cmd::featurize::run(args),
        cli::Command::Weights(args) => cmd::weights::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fruits: error: {e:#}");
            ExitCode::from(cmd::EXIT_ERROR)
        }
    }
}
