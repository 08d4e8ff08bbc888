//! `fruits pack`: photos → shards, every input accounted for: packed,
//! rejected with its reason (the errors file of the shard being written),
//! or counted as not an image. Each shard is a part of the output folder,
//! committed as every part is ([`crate::part::commit`]: attempt-unique
//! names, manifest last), so a killed `pack` leaves whole shards and
//! leftovers `fruits parts clean` removes, never a half shard.
//!
//! A run packs only what no complete shard of the output holds yet (by
//! path), into shards numbered after the last: run again after a kill, it
//! goes on; run again with nothing new, it packs nothing; run daily on a
//! growing prefix, it packs the new photos.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use super::input::{self, Input, Inventory, Item, SHARD_KIND};
use super::shard::{self, Photo, Shard, ShardWriter};
use crate::error::{Error, Param, Result};
use crate::image::{format, RejectKind, Rejection};
use crate::part::folder;
use crate::part::{Attempt, Committed, Role};
use crate::storage::{read_local, Fetch, FetchLimits, Location, Storage};

/// Photos fetched ahead of the one being written (S3 answers in any order).
const WINDOW: usize = 256;

/// What the shards' manifests say about how they were made.
fn run_meta() -> BTreeMap<String, String> {
    [(shard::FORMAT_KEY.to_string(), shard::FORMAT.to_string())].into()
}

#[derive(Debug, Clone)]
pub struct PackJob {
    pub input: Input,
    pub output: Location,
    /// A shard ends once its photos weigh this much...
    pub shard_bytes: u64,
    /// ...or hold this many.
    pub shard_rows: usize,
    pub limits: FetchLimits,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Packed {
    /// Shards written by this run.
    pub shards: Vec<Committed>,
    /// Photos packed by this run.
    pub packed: usize,
    /// In input order: the path and why.
    pub rejected: Vec<(String, Rejection)>,
    /// Photos complete shards of the output held already (not read).
    pub already: usize,
    pub not_images: Vec<String>,
    pub duplicates: usize,
}

pub fn run(job: &PackJob, storage: &Storage, on_photo: &(dyn Fn(usize, usize) + Sync)) -> Result<Packed> {
    if let Input::Folder(input) = &job.input {
        if input.contains(&job.output) || job.output.contains(input) {
            let (output, input) = (job.output.to_string(), input.to_string());
            return Err(Error::Nested { output, input, within: Param::Input });
        }
    }
    if job.shard_bytes == 0 || job.shard_rows == 0 {
        return Err(Error::invalid(Param::Output, "shards must hold at least one photo and one byte"));
    }
    let out = folder::as_folder(&job.output);
    let (held, next_part) = already_packed(storage, &out)?;
    // Held: packed (or rejected) by a complete shard, and not written since.
    let is_held = |it: &Item| match held.get(&it.name()) {
        Some(&written) => !matches!((it.modified, written), (Some(m), Some(w)) if m > w),
        None => false,
    };
    let inventory = input::take(storage, &job.input)?;
    if !inventory.shards.is_empty() {
        return Err(Error::invalid(Param::Input, format!("holds shards already: {}", inventory.shards[0].location)));
    }
    let Inventory { items, not_images, duplicates, .. } = inventory;
    let total = items.len();
    let todo: Vec<Item> = items.into_iter().filter(|it| !is_held(it)).collect();
    let mut run = Packed { already: total - todo.len(), not_images, duplicates, ..Packed::default() };
    let mut writer = Writing::new(storage, &out, next_part, job)?;
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let mut pending: BTreeMap<usize, std::result::Result<Vec<u8>, Rejection>> = BTreeMap::new();
    let mut next = 0;
    let mut failure: Option<Result<()>> = None;
    let locs: Vec<Location> = todo.iter().map(|it| it.location.clone()).collect();
    let fetched = fetch(storage, &locs, &job.limits, &window, &mut |i, got| {
        // Held as plain bytes: the window, not the fetch budget, bounds them.
        let got = match got {
            Ok(f) => Ok(f.bytes),
            Err(Fetch::Rejected(r)) => Err(r),
            Err(Fetch::Fatal(e)) => {
                failure = Some(Err(*e));
                return false;
            }
        };
        pending.insert(i, got);
        while let Some(got) = pending.remove(&next) {
            if let Err(e) = writer.add(&todo[next], got, &mut run) {
                failure = Some(Err(e));
                return false;
            }
            window.add_permits(1);
            next += 1;
            on_photo(run.packed, run.rejected.len());
        }
        true
    });
    fetched?;
    if let Some(f) = failure {
        f?;
    }
    writer.finish(&mut run)?;
    Ok(run)
}

/// Reads `locs` with the window's read-ahead: S3 with requests in flight,
/// local files one after another.
fn fetch(
    storage: &Storage,
    locs: &[Location],
    limits: &FetchLimits,
    window: &Arc<tokio::sync::Semaphore>,
    send: &mut dyn FnMut(usize, std::result::Result<crate::storage::Fetched, Fetch>) -> bool,
) -> Result<()> {
    if locs.iter().any(Location::is_s3) {
        return storage.fetch_all(locs, limits, window, send);
    }
    for (i, loc) in locs.iter().enumerate() {
        let Location::Local(p) = loc else { unreachable!("local locations only") };
        let got = read_local(p, limits.max_image_bytes).map(crate::storage::Fetched::new).map_err(Fetch::Rejected);
        if !send(i, got) {
            break;
        }
    }
    Ok(())
}

/// The paths complete shards of `out` hold (packed or rejected), with when
/// the last shard holding each was written; and the next part number. A
/// folder holding other parts (features) is refused.
fn already_packed(storage: &Storage, out: &Location) -> Result<(HashMap<String, Option<SystemTime>>, u32)> {
    let f = folder::open(storage, out)?;
    let ours = run_meta();
    let mut held = HashMap::new();
    for p in &f.parts {
        if p.manifest.kind != SHARD_KIND || p.manifest.run_difference(&ours).is_some() {
            let which = format!("part {}", p.manifest.part);
            return Err(Error::OtherRun { folder: out.to_string(), which, key: "its kind".into() });
        }
        let rows = p.location(Role::Rows).ok_or_else(|| Error::corrupt(out, "a shard's manifest names no rows"))?;
        let written = p.manifest.written();
        held.extend(Shard::open(storage, &rows)?.entries(storage)?.into_iter().map(|e| (e.path, written)));
        if let Some(errors) = p.location(Role::Errors) {
            let bytes = storage.read(&errors)?.unwrap_or_default();
            let mut csv = csv::Reader::from_reader(bytes.as_slice());
            for rec in csv.records() {
                let rec = rec.map_err(|e| Error::parse(&errors, e))?;
                held.insert(rec.get(0).unwrap_or_default().to_string(), written);
            }
        }
    }
    let next = f.parts.iter().map(|p| p.manifest.part + 1).max().unwrap_or(0);
    Ok((held, next))
}

/// Why bytes cannot be packed: what `featurize` would refuse without
/// decoding (no bytes, a format nobody decodes here).
fn refuse(bytes: &[u8]) -> Option<Rejection> {
    if bytes.is_empty() {
        return Some(Rejection::new(RejectKind::Empty, "file has zero bytes"));
    }
    match format::sniff(bytes) {
        None => Some(Rejection::new(RejectKind::Unsupported, "content is not a known image format")),
        Some(f) if f.decoder.is_none() => Some(Rejection::new(
            RejectKind::Unsupported,
            format!("{} image: fruits decodes {} (convert it first)", f.name, format::decoded_names()),
        )),
        Some(_) => None,
    }
}

/// The shard being written, and its rejections.
struct Writing<'a> {
    storage: &'a Storage,
    out: Location,
    job: &'a PackJob,
    part: u32,
    current: Option<Open<'a>>,
}

struct Open<'a> {
    attempt: Attempt<'a>,
    shard: ShardWriter,
    errors: csv::Writer<std::fs::File>,
    rejected: u64,
}

impl<'a> Writing<'a> {
    fn new(storage: &'a Storage, out: &Location, part: u32, job: &'a PackJob) -> Result<Self> {
        Ok(Self { storage, out: out.clone(), job, part, current: None })
    }

    fn open(&mut self) -> Result<&mut Open<'a>> {
        if self.current.is_none() {
            let attempt = Attempt::begin(self.storage, &self.out, self.part)?;
            let shard = ShardWriter::create(&attempt.staging_path(Role::Rows))?;
            let path = attempt.staging_path(Role::Errors);
            let file = crate::storage::files::create_file(&path)?;
            let mut errors = csv::Writer::from_writer(file);
            errors.write_record(["path", "kind", "reason"]).map_err(|e| Error::output(&path, e))?;
            self.current = Some(Open { attempt, shard, errors, rejected: 0 });
        }
        Ok(self.current.as_mut().expect("just opened"))
    }

    fn add(&mut self, item: &Item, got: std::result::Result<Vec<u8>, Rejection>, run: &mut Packed) -> Result<()> {
        let name = item.name();
        let (max_bytes, max_rows) = (self.job.shard_bytes, self.job.shard_rows);
        let open = self.open()?;
        match got.and_then(|bytes| refuse(&bytes).map_or(Ok(bytes), Err)) {
            Ok(content) => {
                let sha256 = crate::digest::sha256_bytes(&content);
                let photo = Photo {
                    path: name,
                    modified: item.modified,
                    label: item.label.clone(),
                    split: item.split.clone(),
                    sha256,
                    content,
                };
                open.shard.push(photo)?;
                run.packed += 1;
            }
            Err(why) => {
                let path = open.attempt.staging_path(Role::Errors);
                open.errors
                    .write_record([name.as_str(), why.kind.as_str(), why.detail.as_str()])
                    .map_err(|e| Error::output(&path, e))?;
                open.rejected += 1;
                run.rejected.push((name, why));
            }
        }
        let full = open.shard.bytes() >= max_bytes || open.shard.rows() >= max_rows;
        if full {
            self.commit(run)?;
        }
        Ok(())
    }

    /// Commits the shard being written, if any.
    fn commit(&mut self, run: &mut Packed) -> Result<()> {
        let Some(open) = self.current.take() else { return Ok(()) };
        let Open { attempt, shard, mut errors, rejected } = open;
        let errors_path = attempt.staging_path(Role::Errors);
        errors.flush().map_err(|e| Error::output(&errors_path, e))?;
        let file = errors.into_inner().map_err(|e| Error::output(&errors_path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::output(&errors_path, e))?;
        let (_, rows) = shard.finish()?;
        let counts: BTreeMap<String, u64> =
            [("photos".to_string(), rows as u64), ("rejected".to_string(), rejected)].into();
        let roles = [(Role::Rows, rows as u64), (Role::Errors, rejected)];
        run.shards.push(attempt.commit(SHARD_KIND, run_meta(), counts, &roles)?);
        self.part += 1;
        Ok(())
    }

    fn finish(mut self, run: &mut Packed) -> Result<()> {
        self.commit(run)
    }
}
