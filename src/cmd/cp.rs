//! `fruits cp`

use std::process::ExitCode;

use fruits::storage::{Location, S3Options, Storage};

/// Copy one file between a local path and S3 (either way, or S3 to S3), with the
/// same credentials, endpoint and Europe-only checks as every other command: what a
/// cluster driver needs to fetch weights and put its report.
#[derive(Debug, clap::Args)]
pub struct Args {
    source: Location,
    #[arg(required_unless_present = "size")]
    dest: Option<Location>,
    /// Copy only these bytes of SOURCE, START..END (END excluded; the copy stops at the
    /// end of SOURCE): a task's slice of a key list, in one ranged read
    #[arg(long, value_name = "START..END", value_parser = parse_bytes_range)]
    bytes: Option<(u64, u64)>,
    /// Print the size of SOURCE in bytes instead of copying it (a driver splitting a key
    /// list by bytes)
    #[arg(long, conflicts_with_all = ["dest", "bytes"])]
    size: bool,
}

fn parse_bytes_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once("..").ok_or("expected START..END, e.g. 0..1048576")?;
    let number = |x: &str| x.trim().parse::<u64>().map_err(|_| format!("{x:?} is not a byte offset"));
    let (a, b) = (number(a)?, number(b)?);
    if a > b {
        return Err(format!("{a}..{b} ends before it starts"));
    }
    Ok((a, b))
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let size = || storage.size(&args.source)?.ok_or_else(|| anyhow::anyhow!("{}: no such file", args.source));
    let Some(dest) = &args.dest else {
        say!("{}", size()?);
        return Ok(ExitCode::SUCCESS);
    };
    match (&args.source, dest, args.bytes) {
        (Location::Local(src), dest, None) => storage.put_file(src, dest)?,
        (src, dest, range) => {
            let bytes = match range {
                Some((start, end)) => {
                    let end = end.min(size()?);
                    storage.get_range(src, start.min(end), end - start.min(end))?
                }
                None => storage.read(src)?.ok_or_else(|| anyhow::anyhow!("{src}: no such object"))?,
            };
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
    eprintln!("fruits: copied {} to {dest}", args.source);
    Ok(ExitCode::SUCCESS)
}
