//! `fruits pack`

use clap::builder::TypedValueParser as _;
use std::process::ExitCode;

use fruits::part::Role;
use fruits::photos::pack::{self, PackJob};
use fruits::photos::shard::{DEFAULT_SHARD_BYTES, DEFAULT_SHARD_ROWS};
use fruits::storage::{FetchLimits, Location, S3Options, Storage, DEFAULT_MAX_IMAGE_BYTES};

use super::parse::parse_bytes;

/// Pack photos into shards: Parquet files holding each photo's bytes, so that millions of
/// photos are thousands of S3 objects (fewer requests, fewer latencies), which
/// `featurize --input <shards>` reads as it reads loose photos, with the same features.
///
/// Reads every file under --input (or the locations in --keys) and writes shards into
/// --output: part-NNNNN-<attempt>.parquet with the columns path, modificationTime, length,
/// label, split, sha256, content (Spark's binaryFile columns and the labels), and in
/// _fruits/ each shard's errors file (path, kind, reason) and its manifest, written last:
/// a shard appears whole or not at all. A shard ends at --shard-size bytes of photos or
/// --shard-rows photos; its row groups hold 16 MB of photos at most.
///
/// Every file is packed, rejected with its reason (empty, too large, unreadable, a format
/// fruits does not decode), or counted as not an image. A run packs only what the output's
/// complete shards do not hold yet (by path), into new shards: rerun after a crash, it goes
/// on; rerun daily on a growing folder, it packs the new photos.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    photos: super::featurize::PhotosArgs,

    /// Folder receiving the shards (local or s3://bucket/prefix).
    #[arg(long)]
    output: Location,

    /// Photos' bytes per shard, about (K, M, G suffixes).
    #[arg(long, default_value_t = DEFAULT_SHARD_BYTES, value_parser = parse_bytes)]
    shard_size: u64,

    /// Photos per shard at most.
    #[arg(long, default_value_t = DEFAULT_SHARD_ROWS, value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|v| v as usize))]
    shard_rows: usize,

    /// Largest photo read (bytes; K, M, G suffixes); a larger one is rejected as too-large
    /// without being read.
    #[arg(long, default_value_t = DEFAULT_MAX_IMAGE_BYTES, value_parser = parse_bytes)]
    max_image_bytes: u64,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let job = PackJob {
        input: args.photos.input(),
        output: args.output,
        shard_bytes: args.shard_size,
        shard_rows: args.shard_rows,
        limits: FetchLimits::new(args.max_image_bytes),
    };
    let done = pack::run(&job, &storage, &|_, _| {})?;
    for s in &done.shards {
        let rows = s.manifest.counts.get("photos").copied().unwrap_or(0);
        let at = s.location(Role::Rows).map(|l| l.to_string()).unwrap_or_default();
        eprintln!("fruits: shard {}: {rows} photos: {at}", s.manifest.part);
    }
    eprintln!(
        "fruits: packed {} photos into {} shards ({} rejected, {} already packed, {} not images, {} duplicate keys) in {}",
        done.packed,
        done.shards.len(),
        done.rejected.len(),
        done.already,
        done.not_images.len(),
        done.duplicates,
        job.output
    );
    for (path, why) in done.rejected.iter().take(10) {
        eprintln!("fruits:   rejected {path}: {why}");
    }
    Ok(ExitCode::SUCCESS)
}
