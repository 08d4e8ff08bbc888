//! `fruits list`

use std::io::Write;
use std::process::ExitCode;

use fruits::features::input::list_location;
use fruits::storage::{Location, S3Options, Storage};

/// Print the image keys under a folder or s3://bucket/prefix, one per line,
/// in the order `featurize` takes them (byte order of the path relative to
/// the folder, the same locally and in S3), for a cluster driver to split,
/// then `featurize --keys`. Lists with pagination: millions of keys are
/// fine. Files that are not images are counted on stderr.
#[derive(Debug, clap::Args)]
pub struct Args {
    location: Location,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let inventory = list_location(&storage, &args.location)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for it in &inventory.items {
        if let Err(e) = writeln!(out, "{}", it.name()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }
    out.flush()?;
    eprintln!(
        "fruits: {} images under {} ({} other files, not images)",
        inventory.items.len(),
        args.location,
        inventory.not_images.len()
    );
    Ok(ExitCode::SUCCESS)
}
