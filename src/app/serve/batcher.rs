//! Concurrent requests share one network call: each request puts its
//! decoded photo on a bounded queue; one thread takes what is waiting (up
//! to `max_batch`, waiting at most `max_wait` after the first for more),
//! runs the network and the search once for all, and answers each.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::app::identify::{Answer, Identifier};
use crate::image::Prepared;

/// What a request gets back.
pub struct Done {
    pub answer: Answer,
    pub queue_ms: f64,
    pub model_ms: f64,
    pub search_ms: f64,
    pub batch: usize,
}

pub type Reply = Result<Done, String>;

struct Job {
    photo: Prepared,
    queued: Instant,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    pub max_batch: usize,
    pub max_wait: Duration,
    /// Photos waiting at most; beyond, requests are refused (503).
    pub queue: usize,
}

pub struct Batcher {
    queue: Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

/// The queue is full: the server is overloaded.
pub struct Busy;

impl Batcher {
    pub fn start(engine: Arc<Identifier>, options: BatchOptions, metrics: Arc<Metrics>) -> Self {
        let (queue, jobs) = bounded::<Job>(options.queue);
        let thread = std::thread::Builder::new()
            .name("fruits-batcher".into())
            .spawn(move || run(&engine, &jobs, options, &metrics))
            .expect("a thread starts");
        Self { queue, thread: Some(thread) }
    }

    /// Queues a photo; the answer comes on the returned channel.
    pub fn submit(&self, photo: Prepared) -> Result<oneshot::Receiver<Reply>, Busy> {
        let (reply, answer) = oneshot::channel();
        match self.queue.try_send(Job { photo, queued: Instant::now(), reply }) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

impl Drop for Batcher {
    /// Closes the queue and lets the thread answer what is queued.
    fn drop(&mut self) {
        let (closed, _) = bounded(0);
        self.queue = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(engine: &Identifier, jobs: &Receiver<Job>, options: BatchOptions, metrics: &Metrics) {
    while let Ok(first) = jobs.recv() {
        let deadline = Instant::now() + options.max_wait;
        let mut batch = vec![first];
        while batch.len() < options.max_batch {
            match jobs.recv_deadline(deadline) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Clients that gave up (timed out) need no answer.
        batch.retain(|j| !j.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        metrics.batch_size.observe(batch.len() as f64);
        let photos: Vec<&Prepared> = batch.iter().map(|j| &j.photo).collect();
        let features = engine.features(&photos);
        let model_ms = ms(started.elapsed());
        let searched = Instant::now();
        let answers = features.map(|f| engine.answer(&f));
        let search_ms = ms(searched.elapsed());
        let n = batch.len();
        match answers {
            Ok(answers) => {
                for (job, answer) in batch.into_iter().zip(answers) {
                    let queue_ms = ms(started.duration_since(job.queued));
                    let _ = job.reply.send(Ok(Done { answer, queue_ms, model_ms, search_ms, batch: n }));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(format!("the model failed: {e}")));
                }
            }
        }
    }
}
