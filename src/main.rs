//! The `fruits` binary: parse, dispatch, print an error once.

use std::process::ExitCode;

use clap::Parser;

/// Each layer allocates its output; the system allocator hands large blocks
/// back to the kernel and page-faults them in again on the next image
/// (a tenth of the CPU time in `perf`). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;
mod cmd;

/// One arm per subcommand.
fn dispatch(command: cli::Command, s3: &fruits::storage::S3Options) -> anyhow::Result<ExitCode> {
    match command {
        cli::Command::Featurize(args) => cmd::featurize::run(args, s3),
        cli::Command::Pack(args) => cmd::pack::run(args, s3),
        cli::Command::Pca(args) => cmd::pca::run(args, s3),
        cli::Command::Index(args) => cmd::index::run(args, s3),
        cli::Command::Identify(args) => cmd::identify::run(args, s3),
        cli::Command::Serve(args) => cmd::serve::run(args, s3),
        cli::Command::Weights(args) => cmd::weights::run(args),
        cli::Command::Demo(args) => cmd::demo::run(args, s3),
        cli::Command::List(args) => cmd::list::run(args, s3),
        cli::Command::Cp(args) => cmd::cp::run(args, s3),
        cli::Command::Regions(args) => cmd::regions::run(args),
        cli::Command::Parts(args) => cmd::parts::run(args, s3),
        cli::Command::Bench(args) => cmd::bench::run(args, s3),
        cli::Command::Info(args) => cmd::info::run(args),
    }
}

fn main() -> ExitCode {
    // Candle asks `num_cpus::get_physical()` for its thread count on every
    // matmul and convolution unless RAYON_NUM_THREADS is set, and that reads
    // /proc/cpuinfo each time: 85,000 reads for 233 images, 30% of the CPU
    // time (`perf`, `strace`). Setting it once, before any thread starts,
    // keeps the same count without the reads.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let cli = cli::Cli::parse();
    if let Err(why) = fruits::engine::simd::check_env() {
        eprintln!("fruits: error: {why}");
        return ExitCode::from(cmd::EXIT_USAGE);
    }
    // The docs test (tests/test_docs.rs) runs every documented command line
    // through this parser; with this set it stops here, having refused
    // (exit 2) or accepted what a user would type.
    if std::env::var_os("FRUITS_PARSE_ONLY").is_some() {
        return ExitCode::SUCCESS;
    }
    match dispatch(cli.command, &cli.s3) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fruits: error: {}", cmd::message(&e));
            let code = cmd::exit_code(&e);
            if code == cmd::EXIT_USAGE {
                eprintln!("\nFor more information, try '--help'.");
            }
            ExitCode::from(code)
        }
    }
}
