//! `fruits cp`

use std::process::ExitCode;

use fruits::storage::{Location, S3Options, Storage};

/// Copy one file between a local path and S3 (either way, or S3 to S3), with the
/// same credentials, endpoint and Europe-only checks as every other command: what a
/// cluster driver needs to fetch weights and put its report.
#[derive(Debug, clap::Args)]
pub struct Args {
    source: Location,
    dest: Location,
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    match (&args.source, &args.dest) {
        (Location::Local(src), dest) => storage.put_file(src, dest)?,
        (src, dest) => {
            let bytes = storage.read(src)?.ok_or_else(|| anyhow::anyhow!("{src}: no such object"))?;
            match dest {
                Location::Local(p) => {
                    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)?;
                    }
                    std::fs::write(p, bytes).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?
                }
                s3_dest => storage.put_bytes(bytes, s3_dest)?,
            }
        }
    }
    eprintln!("fruits: copied {} to {}", args.source, args.dest);
    Ok(ExitCode::SUCCESS)
}
