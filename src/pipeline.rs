//! The featurize run: read and decode on one thread pool, infer in batches
//! on the model's device, write rows as they come.
//!
//! Memory is bounded by the batch size, not the input size: at most
//! [`IN_FLIGHT`] decoded batches wait for the model, and the Parquet writer
//! flushes a row group every [`crate::output::ROW_GROUP_ROWS`] rows.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::image::{prepare, Prepared, RejectKind, Rejection};
use crate::input::Item;
use crate::model::Model;
use crate::output::{ErrorWriter, FeatureWriter, RowInfo, RunMeta};
use crate::pca::Moments;
use crate::storage::{Fetch, Location, Storage};

/// The location an item names (`s3://…` or a path).
pub fn location_of(item: &Item) -> Location {
    item.path.to_string_lossy().parse().expect("every string parses as a location")
}

/// Decoded batches allowed to wait for the model.
pub const IN_FLIGHT: usize = 2;

#[derive(Debug, Clone)]
pub struct Options {
    pub batch: usize,
    /// Threads decoding images; the model uses rayon's global pool.
    pub decode_threads: usize,
    pub part_id: u32,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub featurised: usize,
    pub rejected: Vec<(PathBuf, Rejection)>,
    pub elapsed: Duration,
    pub features_path: PathBuf,
    pub errors_path: PathBuf,
}

impl Summary {
    pub fn total(&self) -> usize {
        self.featurised + self.rejected.len()
    }
    pub fn rejected_fraction(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.rejected.len() as f64 / self.total() as f64
        }
    }
    pub fn images_per_sec(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Rejections counted by kind, in a stable order.
    pub fn rejected_by_kind(&self) -> Vec<(RejectKind, usize)> {
        let mut counts: Vec<(RejectKind, usize)> = Vec::new();
        for (_, r) in &self.rejected {
            match counts.iter_mut().find(|(k, _)| *k == r.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((r.kind, 1)),
            }
        }
        counts.sort_by_key(|(k, _)| k.as_str());
        counts
    }
}

fn read_and_prepare(item: &Item, res: u32) -> std::result::Result<Prepared, Rejection> {
    let bytes = std::fs::read(&item.path).map_err(|e| Rejection::new(RejectKind::Unreadable, e.to_string()))?;
    prepare(&bytes, res)
}

/// Where the images' bytes come from.
pub enum ImageSource<'a> {
    /// Local files, read by the decode threads themselves.
    Files,
    /// Any [`Location`]s, fetched by `storage` with requests in flight
    /// (S3), ahead of and overlapped with decoding.
    Storage { storage: &'a Storage, concurrency: usize },
}

type Decoded<'a> = Vec<(&'a Item, std::result::Result<Prepared, Rejection>)>;

/// Featurises `items` with `model` into `<out>/part-NNNNN.parquet`, with
/// rejections in `<out>/part-NNNNN.errors.csv`. `on_batch(done, rejected)`
/// is called after every batch (for a progress bar).
pub fn featurize(
    items: &[Item],
    model: &Model,
    run: &RunMeta,
    out: &Path,
    opts: &Options,
    source: &ImageSource,
    on_batch: &(dyn Fn(usize, usize) + Sync),
) -> Result<Summary> {
    if opts.batch == 0 {
        return Err(Error::Usage("--batch must be at least 1".into()));
    }
    let res = model.which.resolution() as u32;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.decode_threads.max(1))
        .thread_name(|i| format!("fruits-decode-{i}"))
        .build()
        .map_err(|e| Error::Usage(format!("cannot start {} decode threads: {e}", opts.decode_threads)))?;
    let mut features = FeatureWriter::create(out, opts.part_id, run)?;
    let mut moments = Moments::new(run.feature_dim);
    let mut errors = ErrorWriter::create(out, opts.part_id)?;
    let mut rejected = Vec::new();
    let start = Instant::now();

    let (tx, rx) = crossbeam_channel::bounded::<Decoded>(IN_FLIGHT);
    let (fatal_tx, fatal_rx) = crossbeam_channel::bounded::<Error>(1);
    let result = std::thread::scope(|s| -> Result<()> {
        match source {
            ImageSource::Files => {
                s.spawn(move || {
                    for chunk in items.chunks(opts.batch) {
                        let decoded: Decoded =
                            pool.install(|| chunk.par_iter().map(|it| (it, read_and_prepare(it, res))).collect());
                        if tx.send(decoded).is_err() {
                            break; // the consumer stopped on an error
                        }
                    }
                });
            }
            ImageSource::Storage { storage, concurrency } => {
                // fetch (async, in flight) -> bytes channel -> decode pool -> model
                type Fetched = (usize, std::result::Result<Vec<u8>, Rejection>);
                let (btx, brx) = crossbeam_channel::bounded::<Fetched>(opts.batch * IN_FLIGHT);
                let locs: Vec<Location> = items.iter().map(location_of).collect();
                let fatal = fatal_tx.clone();
                s.spawn(move || {
                    let r = storage.fetch_all(&locs, *concurrency, &mut |i, got| match got {
                        Ok(bytes) => btx.send((i, Ok(bytes))).is_ok(),
                        Err(Fetch::Rejected(why)) => btx.send((i, Err(why))).is_ok(),
                        Err(Fetch::Fatal(e)) => {
                            let _ = fatal.try_send(e);
                            false
                        }
                    });
                    if let Err(e) = r {
                        let _ = fatal.try_send(e);
                    }
                });
                s.spawn(move || {
                    let decode = |chunk: &[Fetched]| -> Decoded {
                        pool.install(|| {
                            chunk
                                .par_iter()
                                .map(|(i, got)| {
                                    (&items[*i], got.as_ref().map_err(Clone::clone).and_then(|b| prepare(b, res)))
                                })
                                .collect()
                        })
                    };
                    let mut chunk = Vec::with_capacity(opts.batch);
                    for got in brx {
                        chunk.push(got);
                        if chunk.len() == opts.batch {
                            if tx.send(decode(&chunk)).is_err() {
                                return;
                            }
                            chunk.clear();
                        }
                    }
                    if !chunk.is_empty() {
                        let _ = tx.send(decode(&chunk));
                    }
                });
            }
        }
        drop(fatal_tx);
        let (mut done, mut bad) = (0, 0);
        for decoded in rx {
            let mut rows = Vec::with_capacity(decoded.len());
            let mut rgb = Vec::with_capacity(decoded.len() * 3 * (res * res) as usize);
            for (item, r) in &decoded {
                match r {
                    Ok(p) => {
                        rgb.extend_from_slice(&p.rgb);
                        rows.push(RowInfo { item, width: p.width, height: p.height });
                    }
                    Err(why) => {
                        errors.write(item, why)?;
                        rejected.push((item.path.clone(), why.clone()));
                    }
                }
            }
            bad += decoded.len() - rows.len();
            if !rows.is_empty() {
                let n = rows.len();
                let f = model.features(&rgb)?;
                features.write(&rows, &f)?;
                moments.add_rows(&f);
                done += n;
            }
            on_batch(done, bad);
        }
        Ok(())
    });
    result?;
    if let Ok(e) = fatal_rx.try_recv() {
        return Err(e);
    }
    let featurised = features.rows();
    // A stale statistics file must never sit beside a new part: remove it
    // first, so a crash in between leaves no statistics (recomputed by
    // `pca fit`) rather than wrong ones.
    let stats = crate::parts::stats_path(&out.join(format!("{}.parquet", crate::output::part_stem(opts.part_id))));
    match std::fs::remove_file(&stats) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    let features_path = features.finish()?;
    crate::parts::write_stats(&features_path, &moments, &run.key_values().into_iter().collect())?;
    let errors_path = errors.finish()?;
    Ok(Summary { featurised, rejected, elapsed: start.elapsed(), features_path, errors_path })
}
