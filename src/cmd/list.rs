//! `fruits list`

use std::io::Write;
use std::process::ExitCode;

use fruits::photos::input::list_location;
use fruits::storage::{Location, S3Options, Storage};

/// Print the image keys under a folder or s3://bucket/prefix, one per line,
/// in the order `featurize` takes them (byte order of the path relative to
/// the folder, the same locally and in S3), for a cluster driver to split,
/// then `featurize --keys`. Lists with pagination: millions of keys are
/// fine. Files that are not images are counted on stderr. A key with a
/// control character (a line break, a carriage return...) cannot stand on
/// a line of a key list: the listing is refused, naming each such key.
#[derive(Debug, clap::Args)]
pub struct Args {
    location: Location,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let inventory = list_location(&storage, &args.location)?;
    let unlisted: Vec<String> =
        inventory.items.iter().map(|it| it.name()).filter(|n| n.chars().any(char::is_control)).collect();
    if !unlisted.is_empty() {
        let named: Vec<String> = unlisted.iter().take(10).map(|n| format!("{n:?}")).collect();
        anyhow::bail!(
            "{} keys under {} hold a control character and cannot stand on a line of a key list: {}{} \
             (rename them, or featurize the folder with --input)",
            unlisted.len(),
            args.location,
            named.join(", "),
            if unlisted.len() > 10 { ", ..." } else { "" }
        );
    }
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
