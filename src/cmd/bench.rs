//! `fruits bench`

use std::process::ExitCode;
use std::time::Instant;

use fruits::input::list_location;
use fruits::pipeline::location_of;
use fruits::storage::{Location, S3Options, Storage};

/// Measure one stage of the pipeline on its own.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Fetch every image under a folder or s3://bucket/prefix with --s3-concurrency
    /// requests in flight, decode nothing, and report objects/s and MB/s.
    Fetch { location: Location },
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Fetch { location } => {
            let storage = Storage::new(s3.clone());
            let items = list_location(&storage, &location)?;
            let locs: Vec<Location> = items.iter().map(location_of).collect();
            let start = Instant::now();
            let (mut bytes, mut failed) = (0usize, 0usize);
            storage.fetch_all(&locs, s3.s3_concurrency as usize, &mut |_, got| {
                match got {
                    Ok(b) => bytes += b.len(),
                    Err(_) => failed += 1,
                }
                true
            })?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "fetched {} objects ({} failed, {:.1} MB) in {secs:.2} s with {} in flight: {:.0} objects/s, {:.2} MB/s",
                locs.len(),
                failed,
                bytes as f64 / 1e6,
                s3.s3_concurrency,
                locs.len() as f64 / secs,
                bytes as f64 / 1e6 / secs
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
