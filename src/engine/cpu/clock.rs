//! Time spent in each block of the network, summed over the threads that
//! ran it: what `fruits bench infer --blocks` prints beside each block's
//! multiply-adds, to show which blocks run far below the kernels' speed.
//! Off, it costs one relaxed load a block.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// One counter of nanoseconds per slot (a block, or the head).
#[derive(Debug)]
pub struct Clock {
    on: AtomicBool,
    ns: Vec<AtomicU64>,
}

impl Clock {
    pub fn new(slots: usize) -> Self {
        Self { on: AtomicBool::new(false), ns: (0..slots).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, Relaxed);
    }

    /// The start of a timed stretch, when the clock is on.
    pub fn start(&self) -> Option<Instant> {
        self.on.load(Relaxed).then(Instant::now)
    }

    /// Adds the time since `start` to `slot`.
    pub fn stop(&self, slot: usize, start: Option<Instant>) {
        if let Some(t) = start {
            self.ns[slot].fetch_add(t.elapsed().as_nanos() as u64, Relaxed);
        }
    }

    /// Each slot's total, set back to zero.
    pub fn take(&self) -> Vec<Duration> {
        self.ns.iter().map(|n| Duration::from_nanos(n.swap(0, Relaxed))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_while_on_and_takes_once() {
        let c = Clock::new(2);
        c.stop(0, c.start());
        assert_eq!(c.take(), vec![Duration::ZERO; 2], "off: nothing counted");
        c.set(true);
        let t = c.start();
        std::thread::sleep(Duration::from_millis(5));
        c.stop(1, t);
        let got = c.take();
        assert_eq!(got[0], Duration::ZERO);
        assert!(got[1] >= Duration::from_millis(5), "{got:?}");
        assert_eq!(c.take(), vec![Duration::ZERO; 2], "taken: back to zero");
    }
}
