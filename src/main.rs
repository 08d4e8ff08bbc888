//! The `fruits` binary: parse, dispatch, print an error once.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod cmd;

/// One arm per subcommand.
fn dispatch(command: cli::Command) -> anyhow::Result<ExitCode> {
    match command {
        cli::Command::Featurize(args) => cmd::featurize::run(args),
        cli::Command::Pca(args) => cmd::pca::run(args),
        cli::Command::Weights(args) => cmd::weights::run(args),
        cli::Command::Demo(args) => cmd::demo::run(args),
    }
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fruits: error: {e:#}");
            ExitCode::from(cmd::EXIT_ERROR)
        }
    }
}
