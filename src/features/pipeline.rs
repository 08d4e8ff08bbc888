//! The featurize stream: bytes → pixels → batches → features → rows, with
//! memory bounded whatever the input, and every input ending as a row or a
//! rejection, written in input order.
//!
//! ```text
//! read (local: decode threads; S3: requests in flight, any order;
//!       shards: a row group at a time, in order)
//!   → decode + resize (decode pool; DECODE_MEMORY bounds huge images)
//!   → model (its device; one batch at a time)
//!   → reorder (results back into input order) → Parquet + errors + statistics
//! ```
//!
//! Bounds: fetched bytes ≤ [`FetchLimits::memory`]; images in flight ≤
//! [`WINDOW`] ahead of the writer (a slow object delays, never reorders);
//! decoded batches waiting for the model ≤ [`IN_FLIGHT`]; a Parquet row
//! group ≤ [`crate::part::schema::ROW_GROUP_ROWS`] rows.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use rayon::prelude::*;

use super::writers::{ErrorWriter, FeatureWriter};
use crate::engine::model::Model;
use crate::error::{Error, Param, Result};
use crate::image::{prepare, Prepared, RejectKind, Rejection};
use crate::part::schema::{RowId, RowInfo};
use crate::pca::maths::Moments;
use crate::photos::input::Item;
use crate::photos::shard::Shard;
use crate::storage::fetch::too_large;
use crate::storage::{read_local, Fetch, FetchLimits, Fetched, Location, Storage};

/// Decoded batches allowed to wait for the model.
pub const IN_FLIGHT: usize = 2;

/// Images read ahead of the first one not yet written (S3).
pub const WINDOW: usize = 4096;

/// How long a partial batch waits for more fetched images before it is
/// decoded anyway (S3 results arrive one by one, in any order).
const FILL_WAIT: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
pub struct Options {
    pub batch: usize,
    /// Threads decoding images; the model uses rayon's global pool.
    pub decode_threads: usize,
    pub limits: FetchLimits,
}

/// Where the stream writes its three files (local paths; the caller commits them).
pub struct Outputs<'a> {
    pub features: &'a std::path::Path,
    pub errors: &'a std::path::Path,
    /// Written with this metadata (how the rows were made).
    pub stats: &'a std::path::Path,
}

/// What a stream did.
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    pub featurised: usize,
    /// In input order: the row's path and why.
    pub rejected: Vec<(String, Rejection)>,
    pub elapsed: Duration,
}

impl Streamed {
    pub fn total(&self) -> usize {
        self.featurised + self.rejected.len()
    }
    pub fn images_per_sec(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Rejections counted by kind, in a stable order.
    pub fn rejected_by_kind(&self) -> Vec<(RejectKind, usize)> {
        let mut counts: BTreeMap<&str, (RejectKind, usize)> = BTreeMap::new();
        for (_, r) in &self.rejected {
            counts.entry(r.kind.as_str()).or_insert((r.kind, 0)).1 += 1;
        }
        counts.into_values().collect()
    }
}

type Decoded = Vec<(usize, std::result::Result<Prepared, Rejection>)>;

/// What to featurise: the items, and the shards packed ones are in.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub items: &'a [Item],
    pub shards: &'a [Shard],
}

/// Featurises the source's items with `model` into `out`.
/// `on_batch(done, rejected)` is called as rows are written (for a progress bar).
pub fn stream(
    source: Source<'_>,
    model: &Model,
    run: &crate::part::schema::RunMeta,
    out: &Outputs,
    opts: &Options,
    storage: &Storage,
    on_batch: &(dyn Fn(usize, usize) + Sync),
) -> Result<Streamed> {
    if opts.batch == 0 || opts.decode_threads == 0 {
        let zero = if opts.batch == 0 { Param::BatchSize } else { Param::DecodeThreads };
        return Err(Error::invalid(zero, "must be at least 1"));
    }
    let start = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.decode_threads)
        .thread_name(|i| format!("fruits-decode-{i}"))
        .build()
        .map_err(|e| Error::Threads { what: format!("{} decode threads", opts.decode_threads), source: Box::new(e) })?;
    let res = model.which.resolution() as u32;
    let items = source.items;
    let mut sink = Sink::create(out, run, source, opts.batch)?;
    let (tx, rx) = crossbeam_channel::bounded::<Decoded>(IN_FLIGHT);
    let (fatal_tx, fatal_rx) = crossbeam_channel::bounded::<Error>(1);
    let window = Arc::new(tokio::sync::Semaphore::new(WINDOW));
    let result = std::thread::scope(|s| -> Result<()> {
        let (window_ref, pool_ref) = (&window, &pool);
        if items.iter().any(|it| it.packed.is_some()) {
            let (btx, brx) = crossbeam_channel::bounded(opts.batch * IN_FLIGHT);
            let max = opts.limits.max_image_bytes;
            s.spawn(move || read_shards(storage, source, max, btx, fatal_tx));
            s.spawn(move || decode_arrivals(pool_ref, brx, res, opts.batch, tx));
        } else if items.iter().any(|it| it.location.is_s3()) {
            let (btx, brx) = crossbeam_channel::bounded(opts.batch * IN_FLIGHT);
            s.spawn(move || fetch(storage, items, &opts.limits, window_ref, btx, fatal_tx));
            s.spawn(move || decode_arrivals(pool_ref, brx, res, opts.batch, tx));
        } else {
            drop(fatal_tx);
            s.spawn(move || read_and_decode(pool_ref, items, res, opts, tx));
        }
        let consumed = consume(rx, model, &mut sink, &window, on_batch);
        // On an error, stop the readers: no more fetches start.
        window.close();
        consumed
    });
    result?;
    if let Ok(e) = fatal_rx.try_recv() {
        return Err(e);
    }
    sink.finish(out, run, start.elapsed())
}

/// Local files: the decode threads read them, a batch at a time, in order.
fn read_and_decode(pool: &rayon::ThreadPool, items: &[Item], res: u32, opts: &Options, tx: Sender<Decoded>) {
    let max = opts.limits.max_image_bytes;
    let indexed: Vec<(usize, &Item)> = items.iter().enumerate().collect();
    for chunk in indexed.chunks(opts.batch) {
        let decoded: Decoded = pool.install(|| {
            chunk
                .par_iter()
                .map(|(i, it)| {
                    let got = match &it.location {
                        Location::Local(p) => read_local(p, max),
                        Location::S3 { .. } => unreachable!("local items only"),
                    };
                    (*i, got.and_then(|bytes| prepare(&bytes, res)))
                })
                .collect()
        });
        if tx.send(decoded).is_err() {
            return; // the consumer stopped on an error
        }
    }
}

type Arrival = (usize, std::result::Result<Fetched, Rejection>);

/// Packed items: their shards read a row group at a time (one ranged read
/// of its photos), in order; rows no item wants (a path packed again
/// later) are skipped, and so are row groups with none wanted.
fn read_shards(storage: &Storage, source: Source<'_>, max_bytes: u64, btx: Sender<Arrival>, fatal: Sender<Error>) {
    let mut wanted: BTreeMap<(usize, usize), Vec<(usize, usize)>> = BTreeMap::new();
    for (i, it) in source.items.iter().enumerate() {
        if let Some(p) = it.packed {
            wanted.entry((p.shard, p.row_group)).or_default().push((p.row, i));
        }
    }
    for ((shard, rg), rows) in wanted {
        let mut contents = match source.shards[shard].contents(storage, rg) {
            Ok(c) => c,
            Err(e) => {
                let _ = fatal.try_send(e);
                return;
            }
        };
        for (row, i) in rows {
            let got = match contents.get_mut(row).and_then(Option::take) {
                Some(bytes) if bytes.len() as u64 > max_bytes => Err(too_large(bytes.len() as u64, max_bytes)),
                Some(bytes) => Ok(Fetched::new(bytes)),
                _ => Err(Rejection::new(
                    RejectKind::Empty,
                    format!("row group {rg}, row {row} of its shard holds no bytes"),
                )),
            };
            if btx.send((i, got)).is_err() {
                return;
            }
        }
    }
}

/// S3 (and mixed) inputs: fetched with requests in flight, sent on as each
/// completes. A fatal error (no bucket, no credentials) stops the run.
fn fetch(
    storage: &Storage,
    items: &[Item],
    limits: &FetchLimits,
    window: &Arc<tokio::sync::Semaphore>,
    btx: Sender<Arrival>,
    fatal: Sender<Error>,
) {
    let locs: Vec<Location> = items.iter().map(|it| it.location.clone()).collect();
    let r = storage.fetch_all(&locs, limits, window, &mut |i, got| match got {
        Ok(bytes) => btx.send((i, Ok(bytes))).is_ok(),
        Err(Fetch::Rejected(why)) => btx.send((i, Err(why))).is_ok(),
        Err(Fetch::Fatal(e)) => {
            let _ = fatal.try_send(*e);
            false
        }
    });
    if let Err(e) = r {
        let _ = fatal.try_send(e);
    }
}

/// Groups arrivals into batches (a partial one once arrivals pause) and
/// decodes each batch on the pool; the fetched bytes' memory is given back
/// as each image is decoded.
fn decode_arrivals(pool: &rayon::ThreadPool, brx: Receiver<Arrival>, res: u32, batch: usize, tx: Sender<Decoded>) {
    while let Ok(first) = brx.recv() {
        let mut chunk = vec![first];
        while chunk.len() < batch {
            match brx.recv_timeout(FILL_WAIT) {
                Ok(a) => chunk.push(a),
                Err(_) => break,
            }
        }
        let decoded: Decoded = pool.install(|| {
            chunk.into_par_iter().map(|(i, got)| (i, got.and_then(|fetched| prepare(&fetched.bytes, res)))).collect()
        });
        if tx.send(decoded).is_err() {
            return;
        }
    }
}

/// Runs the model on each decoded batch and hands the results to the sink.
fn consume(
    rx: Receiver<Decoded>,
    model: &Model,
    sink: &mut Sink,
    window: &tokio::sync::Semaphore,
    on_batch: &(dyn Fn(usize, usize) + Sync),
) -> Result<()> {
    let dim = model.which.feature_dim();
    // One batch of pixels (4.8 MB at 224² × 32), reused: a fresh one per
    // batch came back from the kernel as new pages each time, zeroed.
    let mut rgb = Vec::new();
    for decoded in rx {
        rgb.clear();
        let ok: Vec<(usize, u32, u32)> =
            decoded.iter().filter_map(|(i, r)| r.as_ref().ok().map(|p| (*i, p.width, p.height))).collect();
        for (_, r) in &decoded {
            if let Ok(p) = r {
                rgb.extend_from_slice(&p.rgb);
            }
        }
        let features = if ok.is_empty() { Vec::new() } else { model.features(&rgb)? };
        for ((i, width, height), f) in ok.iter().zip(features.chunks(dim)) {
            sink.done.insert(*i, Done::Row { width: *width, height: *height, features: f.to_vec() });
        }
        for (i, r) in decoded {
            if let Err(why) = r {
                let why = sink.where_packed(i, why);
                sink.done.insert(i, Done::Rejected(why));
            }
        }
        let drained = sink.drain()?;
        window.add_permits(drained);
        on_batch(sink.streamed.featurised, sink.streamed.rejected.len());
    }
    Ok(())
}

/// One input's outcome, waiting for its turn to be written.
enum Done {
    Row { width: u32, height: u32, features: Vec<f32> },
    Rejected(Rejection),
}

/// Puts outcomes back into input order and writes them: rows to Parquet
/// (a batch at a time), rejections to the errors file, statistics as they go.
struct Sink<'a> {
    items: &'a [Item],
    shards: &'a [Shard],
    features: FeatureWriter,
    errors: ErrorWriter,
    moments: Moments,
    done: BTreeMap<usize, Done>,
    next: usize,
    rows: Vec<RowInfo>,
    values: Vec<f32>,
    batch: usize,
    streamed: Streamed,
}

impl<'a> Sink<'a> {
    fn create(out: &Outputs, run: &crate::part::schema::RunMeta, source: Source<'a>, batch: usize) -> Result<Self> {
        Ok(Self {
            items: source.items,
            shards: source.shards,
            features: FeatureWriter::create(out.features, run)?,
            errors: ErrorWriter::create(out.errors)?,
            moments: Moments::new(run.feature_dim),
            done: BTreeMap::new(),
            next: 0,
            rows: Vec::new(),
            values: Vec::new(),
            batch,
            streamed: Streamed::default(),
        })
    }

    /// A packed photo's rejection names its shard and row.
    fn where_packed(&self, i: usize, why: Rejection) -> Rejection {
        match self.items[i].packed {
            Some(p) => {
                let at = format!("{}, row group {}, row {}", self.shards[p.shard].location, p.row_group, p.row);
                Rejection::new(why.kind, format!("{} (in {at})", why.detail))
            }
            None => why,
        }
    }

    /// Writes every outcome that is next in input order; returns how many.
    fn drain(&mut self) -> Result<usize> {
        let first = self.next;
        while let Some(done) = self.done.remove(&self.next) {
            let item = &self.items[self.next];
            let id = RowId { path: item.name(), label: item.label.clone(), split: item.split.clone() };
            match done {
                Done::Row { width, height, features } => {
                    self.rows.push(RowInfo { id, width, height });
                    self.values.extend_from_slice(&features);
                }
                Done::Rejected(why) => {
                    self.errors.write(&id.path, &why)?;
                    self.streamed.rejected.push((id.path, why));
                }
            }
            self.next += 1;
            if self.rows.len() >= self.batch {
                self.flush()?;
            }
        }
        Ok(self.next - first)
    }

    fn flush(&mut self) -> Result<()> {
        self.features.write(&self.rows, &self.values)?;
        self.moments.add_rows(&self.values);
        self.streamed.featurised += self.rows.len();
        self.rows.clear();
        self.values.clear();
        Ok(())
    }

    /// Writes what is left and closes the three files.
    fn finish(mut self, out: &Outputs, run: &crate::part::schema::RunMeta, elapsed: Duration) -> Result<Streamed> {
        self.flush()?;
        if self.next != self.items.len() {
            let lost = format!("{} of {} inputs came back from the stream", self.next, self.items.len());
            return Err(Error::output(out.features, lost));
        }
        self.features.finish()?;
        self.errors.finish()?;
        crate::pca::stats::write_stats(out.stats, &self.moments, &run.key_values().into_iter().collect())?;
        self.streamed.elapsed = elapsed;
        Ok(self.streamed)
    }
}
