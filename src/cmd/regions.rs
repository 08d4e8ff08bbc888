//! `fruits regions`

use std::process::ExitCode;

use fruits::storage::region::{Standing, DEFAULT_REGION, EUROPEAN_REGIONS};

/// Print the regions `fruits` keeps data in (Europe only, see docs/GUIDE.md), one per
/// line: code, location, standing. The cluster tooling (emr/) takes its list from the
/// same table.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// As JSON: {"default": ..., "regions": [{"code", "location", "standing"}]}.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let standing = |s: Standing| match s {
        Standing::Eu => "eu",
        Standing::Adequacy => "adequacy",
    };
    if args.json {
        let regions: Vec<serde_json::Value> = EUROPEAN_REGIONS
            .iter()
            .map(
                |(code, location, s)| serde_json::json!({"code": code, "location": location, "standing": standing(*s)}),
            )
            .collect();
        say!("{}", serde_json::json!({"default": DEFAULT_REGION, "regions": regions}));
    } else {
        for (code, location, s) in EUROPEAN_REGIONS {
            say!("{code}\t{location}\t{}", standing(s));
        }
    }
    Ok(ExitCode::SUCCESS)
}
