//! One module per subcommand: its `Args` (whose doc comments are the help)
//! and a `run` that turns them into library calls and prints the outcome.
//! Commands get the global options as a value; none imports the parser.
//! `parse` holds the value parsers the flags share.

pub mod bench;
pub mod bench_sweep;
pub mod cp;
pub mod demo;
pub mod featurize;
pub mod featurize_json;
pub mod identify;
pub mod index;
pub mod info;
pub mod list;
pub mod parse;
pub mod parts;
pub mod pca;
pub mod regions;
pub mod serve;
pub mod weights;

/// The run could not proceed (missing weights, unreadable input, ...).
pub const EXIT_ERROR: u8 = 1;
/// A value on the command line is wrong (as clap's own errors).
pub const EXIT_USAGE: u8 = 2;
/// More images were rejected than `--max-rejected` allows.
pub const EXIT_TOO_MANY_REJECTED: u8 = 3;

/// A command-line error found after parsing: exits 2 like the parser's.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(fruits::Error::Usage(msg.into()))
}

/// The exit status for an error: 2 for a bad command line, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<fruits::Error>() {
        Some(fruits::Error::Usage(_)) => EXIT_USAGE,
        _ => EXIT_ERROR,
    }
}
