//! `fruits demo`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

/// The whole job on the sample shipped in the repository: featurize, fit a
/// PCA keeping 95% of the variance, reduce the features and draw them.
///
/// Runs `featurize`, `pca fit` and `pca transform --plot` in turn, writing under
/// --output, and ends by printing where the features, the PCA model and the
/// pictures are.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Weights, as for `featurize` (a path, or random:SEED to run offline).
    #[arg(long)]
    weights: Option<String>,
    #[arg(long, default_value = "mobilenetv2")]
    model: String,
    #[arg(long, default_value = "out/demo")]
    output: PathBuf,
}

pub fn run(args: Args, s3: &fruits::storage::S3Options) -> anyhow::Result<ExitCode> {
    let out = |sub: &str| args.output.join(sub).to_string_lossy().into_owned();
    let (features, pca, reduced) = (out("features"), out("pca"), out("reduced"));
    let mut featurize = vec!["featurize", "--model", &args.model, "--output", &features];
    if let Some(w) = &args.weights {
        featurize.extend(["--weights", w.as_str()]);
    }
    let steps: [Vec<&str>; 3] = [
        featurize,
        vec!["pca", "fit", "--features", &features, "--variance", "0.95", "--output", &pca],
        vec!["pca", "transform", "--features", &features, "--model", &pca, "--output", &reduced, "--plot"],
    ];
    for step in steps {
        let cli = Cli::try_parse_from(std::iter::once("fruits").chain(step.iter().copied()))?;
        let code = crate::dispatch(cli.command, s3)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
    }
    println!("features:        {features}/part-00000.parquet");
    println!("PCA model:       {pca}/pca.json (+ components.parquet, center.parquet, spectrum.parquet)");
    println!("reduced:         {reduced}/part-00000.parquet");
    println!("pictures:        {pca}/explained_variance.svg");
    println!("                 {reduced}/scatter.svg");
    Ok(ExitCode::SUCCESS)
}
