//! `fruits identify`, and the engine options `serve` shares.

use clap::builder::TypedValueParser as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use fruits::app::fruit_info::Table;
use fruits::app::identify::{Answer, Identifier, Options};
use fruits::app::index::{files, vote};
use fruits::engine::{self, DeviceChoice, Dtype, Engine};
use fruits::model::weights::Source;
use fruits::model::Which;
use fruits::storage::{Location, S3Options, Storage};
use serde::Serialize;

use super::parse::parse_fraction;
use super::usage;

/// What `identify` and `serve` answer with.
#[derive(Debug, clap::Args)]
pub struct EngineArgs {
    /// The index (`fruits index build`), local or s3://bucket/prefix.
    #[arg(long)]
    pub index: Location,
    /// Weights of the index's model: a safetensors PATH, or random:SEED. Default: the
    /// index's own random:SEED, else the pinned hub file. Checked against the index.
    #[arg(long)]
    pub weights: Option<Source>,
    /// Fruit information table (CSV, see src/fruit_info.csv). Default: the built-in one.
    #[arg(long)]
    pub info: Option<PathBuf>,
    /// Neighbours that vote.
    #[arg(long, default_value_t = vote::DEFAULT_K, value_parser = clap::value_parser!(u64).range(1..1001).map(|v| v as usize))]
    pub k: usize,
    /// Below this share of the neighbours' vote the answer is "unknown".
    #[arg(long, default_value_t = vote::DEFAULT_MIN_SCORE, value_parser = parse_fraction)]
    pub min_score: f64,
    /// Labels listed per answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..101).map(|v| v as usize))]
    pub top: usize,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// Loads the index, then the model it was built with, and checks they agree.
pub fn open(args: &EngineArgs, storage: &Storage) -> anyhow::Result<Identifier> {
    let scratch = tempfile::tempdir()?;
    let index = files::open(storage, &args.index, scratch.path())?;
    let name = index.meta.get(fruits::part::schema::meta::MODEL).to_string();
    let which = Which::ALL
        .into_iter()
        .find(|w| w.name() == name)
        .ok_or_else(|| usage(format!("the index was built with model {name}, which this build does not know")))?;
    let recorded = index.meta.get(fruits::part::schema::meta::WEIGHTS).to_string();
    let source = match (&args.weights, recorded.strip_prefix("random:").and_then(|s| s.parse().ok())) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(seed)) => Some(Source::Random(seed)),
        (None, None) => None,
    };
    let dtype = match index.meta.get(fruits::part::schema::meta::DTYPE) {
        "bf16" => Dtype::Bf16,
        "f16" => Dtype::F16,
        _ => Dtype::F32,
    };
    let target = super::device(args.device, engine::cpu_only(Engine::Native, dtype))?;
    // The photo's features must be made as the index's were.
    let model = engine::load_as(which, source.as_ref(), &target, Engine::Native, dtype)?;
    if model.is_random() {
        eprintln!("fruits: warning: random weights ({}): answers are for testing only", model.weights_id);
    }
    let info = match &args.info {
        Some(p) => Table::load(p)?,
        None => Table::builtin(),
    };
    let options = Options { k: args.k, min_score: args.min_score, top: args.top };
    Ok(Identifier::new(model, index, info, options)?)
}

/// Name the fruit in photos with an index: the best labels with their share of the
/// neighbours' vote, the nearest indexed photos, and what the fruit is.
///
/// Exit status 1 when a photo could not be read or decoded (the others are answered).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Photos: local paths or s3:// locations.
    #[arg(required = true)]
    photos: Vec<Location>,
    #[command(flatten)]
    engine: EngineArgs,
    /// One JSON array on stdout (per photo: the answer and timings, or an error).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Timings {
    read: f64,
    decode: f64,
    model: f64,
    search: f64,
    total: f64,
}

#[derive(Serialize)]
struct Line {
    photo: String,
    #[serde(flatten)]
    answer: Option<Answer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings_ms: Option<Timings>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// One photo, end to end (read, decode, network, search).
fn one(engine: &Identifier, storage: &Storage, photo: &Location) -> anyhow::Result<(Answer, Timings)> {
    let t0 = Instant::now();
    let bytes = storage.read(photo)?.ok_or_else(|| anyhow::anyhow!("{photo}: no such file"))?;
    let read = ms(t0);
    let t = Instant::now();
    let prepared = engine.prepare(&bytes).map_err(|r| anyhow::anyhow!("{photo}: {r}"))?;
    let decode = ms(t);
    let t = Instant::now();
    let features = engine.features(&[&prepared])?;
    let model = ms(t);
    let t = Instant::now();
    let answer = engine.answer(&features).remove(0);
    let search = ms(t);
    Ok((answer, Timings { read, decode, model, search, total: ms(t0) }))
}

pub fn run(args: Args, s3: &S3Options) -> anyhow::Result<ExitCode> {
    let storage = Storage::new(s3.clone());
    let engine = open(&args.engine, &storage)?;
    let mut lines = Vec::new();
    let mut failed = 0;
    for photo in &args.photos {
        let line = match one(&engine, &storage, photo) {
            Ok((answer, t)) => {
                Line { photo: photo.to_string(), answer: Some(answer), error: None, timings_ms: Some(t) }
            }
            Err(e) => {
                failed += 1;
                Line { photo: photo.to_string(), answer: None, error: Some(format!("{e:#}")), timings_ms: None }
            }
        };
        if !args.json {
            print_line(&line);
        }
        lines.push(line);
    }
    if args.json {
        say!("{}", serde_json::to_string_pretty(&lines)?);
    }
    Ok(if failed > 0 { ExitCode::from(super::EXIT_ERROR) } else { ExitCode::SUCCESS })
}

fn print_line(line: &Line) {
    let (Some(a), Some(t)) = (&line.answer, &line.timings_ms) else {
        eprintln!("fruits: {}", line.error.as_deref().unwrap_or("failed"));
        return;
    };
    let name = match (&a.fruit, &a.info) {
        (None, _) => "unknown fruit".to_string(),
        (Some(_), Some(i)) if !i.variety.is_empty() => format!("{} ({})", i.common_name, i.variety),
        (Some(_), Some(i)) => i.common_name.clone(),
        (Some(f), None) => f.clone(),
    };
    say!("{}: {name}, score {:.0}%  [{:.1} ms]", line.photo, 100.0 * a.score, t.total);
    if let Some(i) = &a.info {
        say!("  {} ({}): {}", i.scientific_name, i.family, i.description);
    }
    let top: Vec<String> = a.top.iter().map(|s| format!("{} {:.0}%", s.label, 100.0 * s.score)).collect();
    say!("  top: {}", top.join(", "));
    for n in &a.neighbours {
        say!("  near: {} ({}, cosine {:.3})", n.path.as_deref().unwrap_or("?"), n.label, n.similarity);
    }
}
