//! `featurize` as a job, in named steps: check the output folder (whose
//! run it is, nothing of another run overwritten unless asked), skip a part
//! already complete, take the inventory, stream, commit the part.

use std::collections::BTreeMap;

use crate::engine::model::Model;
use crate::error::{Error, Param, Result};
use crate::features::append;
use crate::features::pipeline::{self, Streamed};
use crate::image::preprocessing_description;
use crate::part::folder::{self, Peek};
use crate::part::schema::RunMeta;
use crate::part::{Attempt, Committed, Role};
use crate::photos::input::{self, Inventory};
use crate::storage::{Location, Storage};

/// The run id `featurize` writes when none is given: local reruns with the
/// same model, weights, dtype and preprocessing are one run.
pub const DEFAULT_RUN_ID: &str = "default";

pub use crate::photos::input::Input;

/// One `featurize` run: one part of a folder.
#[derive(Debug, Clone)]
pub struct Job {
    pub input: Input,
    pub output: Location,
    pub part: u32,
    pub run_id: String,
    /// Do nothing if this part is already complete (same run).
    pub skip_existing: bool,
    /// Remove the folder's parts of other runs instead of refusing.
    pub overwrite: bool,
    /// Featurise only what no complete part holds, as the next part
    /// (see [`crate::features::append`]); `part` is then ignored.
    pub append: bool,
    pub stream: pipeline::Options,
}

/// What a job did.
#[derive(Debug, Clone)]
pub enum Report {
    /// `--skip-existing` found the part complete: where its manifest is, and what it says.
    Skipped(Location, Box<crate::part::manifest::Manifest>),
    /// `--append` found nothing new, changed or deleted.
    UpToDate(Appended),
    Done(Box<Done>),
}

/// What `--append` found, besides the new photos.
#[derive(Debug, Clone, Copy, Default)]
pub struct Appended {
    /// Photos the folder's parts held already, unchanged.
    pub held: usize,
    pub changed: usize,
    pub deleted: usize,
    /// Parts committed again without the rows of changed and deleted photos.
    pub rewritten: usize,
}

#[derive(Debug, Clone)]
pub struct Done {
    /// With `--append`: what the folder held.
    pub appended: Option<Appended>,
    pub streamed: Streamed,
    pub not_images: Vec<String>,
    pub duplicates: usize,
    /// Parts of other runs removed (`--overwrite`).
    pub removed: usize,
    pub committed: Committed,
}

/// How the features of `model` are made, for the Parquet metadata and the manifest.
pub fn run_meta(model: &Model, run_id: &str) -> RunMeta {
    RunMeta {
        model: model.which.name().to_string(),
        weights: model.weights_id.clone(),
        preprocessing: {
            let norm = model.which.input_norm();
            preprocessing_description(model.which.resolution(), norm.mean, norm.std)
        },
        feature_dim: model.which.feature_dim(),
        dtype: model.dtype().name().to_string(),
        run_id: run_id.to_string(),
    }
}

pub fn run(job: &Job, model: &Model, storage: &Storage, on_batch: &(dyn Fn(usize, usize) + Sync)) -> Result<Report> {
    let run = run_meta(model, &job.run_id);
    let out = folder::as_folder(&job.output);
    refuse_output_inside_input(job)?;
    if job.append {
        return run_append(job, model, storage, on_batch, &run, &out);
    }
    let peek = folder::peek(storage, &out, job.part)?;
    let ours: BTreeMap<String, String> = run.key_values().into_iter().collect();
    let removed = if job.overwrite {
        folder::remove_other_runs(storage, &out, &ours)?
    } else {
        folder::check_run(&peek, &ours)?;
        0
    };
    if job.skip_existing && is_complete(&peek, &ours) {
        let manifest = peek.own.expect("a complete part has its manifest");
        return Ok(Report::Skipped(out.join(&crate::part::names::manifest_name(job.part)), Box::new(manifest)));
    }
    let inventory = take_inventory(job, storage)?;
    let attempt = Attempt::begin(storage, &out, job.part)?;
    let paths = [Role::Rows, Role::Errors, Role::Stats].map(|r| attempt.staging_path(r));
    let outputs = pipeline::Outputs { features: &paths[0], errors: &paths[1], stats: &paths[2] };
    let source = pipeline::Source { items: &inventory.items, shards: &inventory.shards };
    let streamed = pipeline::stream(source, model, &run, &outputs, &job.stream, storage, on_batch)?;
    let committed = commit(attempt, &run, &inventory, &streamed)?;
    let Inventory { not_images, duplicates, .. } = inventory;
    Ok(Report::Done(Box::new(Done { appended: None, streamed, not_images, duplicates, removed, committed })))
}

/// `--append`: remove changed and deleted photos' rows from their parts,
/// then featurise the new and changed ones as the next part.
fn run_append(
    job: &Job,
    model: &Model,
    storage: &Storage,
    on_batch: &(dyn Fn(usize, usize) + Sync),
    run: &RunMeta,
    out: &Location,
) -> Result<Report> {
    let folder = append::open(storage, out, run)?;
    let mut inventory = take_inventory(job, storage)?;
    let plan = append::plan(storage, &folder, &job.input, &inventory)?;
    for (part, paths) in &plan.remove {
        let p = folder.part(*part).expect("a holder is a part of the folder");
        append::remove(storage, &folder, p, paths, run)?;
    }
    let appended =
        Appended { held: plan.held, changed: plan.changed, deleted: plan.deleted, rewritten: plan.remove.len() };
    if plan.todo.is_empty() {
        return Ok(Report::UpToDate(appended));
    }
    inventory.items = plan.todo;
    let attempt = Attempt::begin(storage, out, append::next_part(&folder))?;
    let paths = [Role::Rows, Role::Errors, Role::Stats].map(|r| attempt.staging_path(r));
    let outputs = pipeline::Outputs { features: &paths[0], errors: &paths[1], stats: &paths[2] };
    let source = pipeline::Source { items: &inventory.items, shards: &inventory.shards };
    let streamed = pipeline::stream(source, model, run, &outputs, &job.stream, storage, on_batch)?;
    let committed = commit(attempt, run, &inventory, &streamed)?;
    let Inventory { not_images, duplicates, .. } = inventory;
    let done = Done { appended: Some(appended), streamed, not_images, duplicates, removed: 0, committed };
    Ok(Report::Done(Box::new(done)))
}

/// Featurising into the input folder would read its own output next time.
fn refuse_output_inside_input(job: &Job) -> Result<()> {
    match &job.input {
        Input::Folder(input) if input.contains(&job.output) => {
            Err(Error::Nested { output: job.output.to_string(), input: input.to_string(), within: Param::Input })
        }
        _ => Ok(()),
    }
}

fn is_complete(peek: &Peek, ours: &BTreeMap<String, String>) -> bool {
    peek.own_complete() && peek.own.as_ref().is_some_and(|m| m.run_difference(ours).is_none())
}

fn take_inventory(job: &Job, storage: &Storage) -> Result<Inventory> {
    input::take(storage, &job.input)
}

fn commit(attempt: Attempt, run: &RunMeta, inventory: &Inventory, streamed: &Streamed) -> Result<Committed> {
    let (rows, rejected) = (streamed.featurised as u64, streamed.rejected.len() as u64);
    let counts: BTreeMap<String, u64> = [
        ("inputs", inventory.items.len() as u64),
        ("featurised", rows),
        ("rejected", rejected),
        ("not_images", inventory.not_images.len() as u64),
        ("duplicates", inventory.duplicates as u64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let roles = [(Role::Rows, rows), (Role::Errors, rejected), (Role::Stats, rows)];
    attempt.commit("features", run.key_values().into_iter().collect(), counts, &roles)
}
