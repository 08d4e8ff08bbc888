//! `fruits weights`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::model::weights;
use fruits::model::{init, Which};

/// Get model weights: fetch the pinned file from the model hub, or write random ones.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Download the pinned safetensors file (hf-hub cache), check its sha256, print its path.
    Fetch {
        #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
        model: Which,
        /// Expected sha256, for a model whose manifest entry pins none.
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Write deterministic random-init weights with the real tensor names and shapes.
    Init {
        #[arg(long, value_enum, default_value_t = Which::MobileNetV2)]
        model: Which,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output safetensors file.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Fetch { model, sha256 } => {
            let path = weights::fetch(model, sha256.as_deref())?;
            println!("{}", path.display());
        }
        Action::Init { model, seed, out } => {
            init::write_random_weights(model, seed, &out)?;
            eprintln!("fruits: wrote random {model} weights (seed {seed}) to {}", out.display());
            println!("{}", fruits::digest::sha256_file(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
