//! `fruits parts`

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use fruits::part::folder;
use fruits::part::Role;
use fruits::storage::{Location, S3Options, Storage};

/// The parts of a folder, as their manifests say.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print the complete parts, one per line: part number, rows, and the rows file
    /// (what `spark.read.parquet(...)` or DuckDB should read).
    List { folder: Location },
    /// Remove the files of attempts that never committed, and of attempts a later one
    /// replaced: the files no manifest names. Run it when no `featurize` writes to the
    /// folder (an attempt's files have no manifest until it finishes): files younger
    /// than --older-than are kept.
    Clean {
        folder: Location,
        /// Keep files written less than this many seconds ago.
        #[arg(long, default_value_t = 3600)]
        older_than: u64,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    match args.action {
        Action::List { folder: at } => {
            let f = folder::open(&storage, &at)?;
            for p in &f.parts {
                let rows = p.location(Role::Rows).map(|l| l.to_string()).unwrap_or_default();
                say!("{}\t{}\t{rows}", p.manifest.part, p.rows());
            }
            let total: u64 = f.parts.iter().map(|p| p.rows()).sum();
            eprintln!("fruits: {} complete parts, {total} rows, {} leftover files", f.parts.len(), f.leftovers.len());
        }
        Action::Clean { folder: at, older_than, dry_run } => {
            let f = folder::open(&storage, &at)?;
            let cutoff = SystemTime::now() - Duration::from_secs(older_than);
            let (mut removed, mut kept) = (0, 0);
            for l in &f.leftovers {
                if l.modified.is_some_and(|m| m > cutoff) {
                    kept += 1;
                    continue;
                }
                let loc = f.location.join(&l.name);
                if !dry_run {
                    storage.delete(&loc)?;
                }
                say!("{loc}");
                removed += 1;
            }
            let verb = if dry_run { "would remove" } else { "removed" };
            eprintln!("fruits: {verb} {removed} leftover files; kept {kept} younger than {older_than} s");
        }
    }
    Ok(ExitCode::SUCCESS)
}
