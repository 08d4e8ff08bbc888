//! `fruits list`

use std::io::Write;
use std::process::ExitCode;

use fruits::photos::input::{list_folders, list_location, list_slice};
use fruits::storage::{KeyRange, Location, S3Options, Storage};

/// Print the image keys under a folder or s3://bucket/prefix, one per line,
/// in the order `featurize` takes them (byte order of the path relative to
/// the folder, the same locally and in S3), for a cluster driver to split,
/// then `featurize --keys`. Lists with pagination: millions of keys are
/// fine. Files that are not images are counted on stderr. A key with a
/// control character (a line break, a carriage return...) cannot stand on
/// a line of a key list: the listing is refused, naming each such key.
///
/// A cluster driver lists a big folder in slices, in parallel: `--folders`
/// prints the folders inside it, and `--after`/`--before` list the slice
/// between two such names (one slice a task).
#[derive(Debug, clap::Args)]
pub struct Args {
    location: Location,
    /// Print the folders right inside LOCATION instead (paths relative to it, ending in
    /// `/`; in S3 one listing with the delimiter `/`, however many photos lie below)
    #[arg(long, conflicts_with_all = ["after", "before"])]
    folders: bool,
    /// Only keys whose path relative to LOCATION sorts after this one (byte order; e.g. a
    /// name from --folders). A slice may hold no photo
    #[arg(long, value_name = "PATH")]
    after: Option<String>,
    /// Only keys whose path relative to LOCATION sorts before this one (byte order)
    #[arg(long, value_name = "PATH")]
    before: Option<String>,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    if args.folders {
        let folders = list_folders(&storage, &args.location)?;
        return print_lines(folders.iter().map(String::as_str));
    }
    let range = KeyRange { after: args.after.clone(), before: args.before.clone(), first: None };
    let inventory = if range == KeyRange::default() {
        list_location(&storage, &args.location)?
    } else {
        list_slice(&storage, &args.location, &range)?
    };
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
    let names: Vec<String> = inventory.items.iter().map(|it| it.name()).collect();
    print_lines(names.iter().map(String::as_str))?;
    let slice = match (&range.after, &range.before) {
        (None, None) => String::new(),
        (a, b) => format!(", after {:?} and before {:?}", a.as_deref().unwrap_or(""), b.as_deref().unwrap_or("(end)")),
    };
    eprintln!(
        "fruits: {} images under {}{slice} ({} other files, not images)",
        inventory.items.len(),
        args.location,
        inventory.not_images.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// One line each on stdout; a reader that stops early (`| head`) is no error.
fn print_lines<'a>(lines: impl Iterator<Item = &'a str>) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in lines {
        if let Err(e) = writeln!(out, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
