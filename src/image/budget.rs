//! A budget of bytes shared by threads: each takes what it is about to
//! allocate and gives it back when done, and waits while the rest is in
//! use. It is what keeps a few huge images from being decoded all at once
//! (the decode threads are many; the memory is not).

use std::sync::{Condvar, Mutex};

#[derive(Debug)]
pub struct Budget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

/// Bytes taken from a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Permit<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    pub const fn new(total: u64) -> Self {
        Self { total: if total == 0 { 1 } else { total }, used: Mutex::new(0), freed: Condvar::new() }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Waits until `bytes` are free, then takes them. A request above the
    /// whole budget takes the whole budget (it runs alone rather than
    /// never), so no request waits forever once the others are done.
    pub fn acquire(&self, bytes: u64) -> Permit<'_> {
        let bytes = bytes.clamp(1, self.total);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used + bytes > self.total {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        Permit { budget: self, bytes }
    }

    /// Bytes currently taken.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn never_more_than_the_total_at_once() {
        let budget = Budget::new(100);
        let peak = AtomicU64::new(0);
        std::thread::scope(|s| {
            for i in 0..8u64 {
                let (budget, peak) = (&budget, &peak);
                s.spawn(move || {
                    for _ in 0..50 {
                        let _p = budget.acquire(10 + 13 * i); // 10..101: the last is clamped to 100
                        peak.fetch_max(budget.in_use(), Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 100);
        assert_eq!(budget.in_use(), 0, "every permit given back");
    }
}
