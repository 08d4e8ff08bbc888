//! Command-line surface: one subcommand per job.

use clap::{Parser, Subcommand};

use crate::cmd;

/// Fruit photos to MobileNet features (and PCA), on a laptop CPU or an EMR GPU node.
///
/// Exit status: 0 success; 1 the run could not proceed (the message says why);
/// 2 bad command line; 3 more images rejected than --max-rejected allows.
#[derive(Debug, Parser)]
#[command(name = "fruits", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub s3: fruits::storage::S3Options,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Featurize(cmd::featurize::Args),
    Pack(cmd::pack::Args),
    Pca(cmd::pca::Args),
    Index(cmd::index::Args),
    Identify(cmd::identify::Args),
    Serve(cmd::serve::Args),
    Weights(cmd::weights::Args),
    Demo(cmd::demo::Args),
    List(cmd::list::Args),
    Cp(cmd::cp::Args),
    Regions(cmd::regions::Args),
    Parts(cmd::parts::Args),
    Bench(cmd::bench::Args),
    Info(cmd::info::Args),
}
