//! The device memory this process holds through the device layer, and its peak since the last
//! reset: what the trainer logs per phase, so the memory plan's figures are checked by
//! measurement. Every allocation of a device goes through `Device::alloc`, which counts it; the
//! count goes down when the allocation (with all its views) is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes in use now and the most in use since the last `reset_peak`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemStats {
    pub in_use: usize,
    pub peak: usize,
}

#[derive(Debug, Default)]
pub struct MemCounter {
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl MemCounter {
    pub const fn new() -> Self {
        MemCounter { in_use: AtomicUsize::new(0), peak: AtomicUsize::new(0) }
    }

    pub fn add(&self, bytes: usize) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    pub fn stats(&self) -> MemStats {
        MemStats { in_use: self.in_use.load(Ordering::Relaxed), peak: self.peak.load(Ordering::Relaxed) }
    }

    /// The peak starts again from what is in use now.
    pub fn reset_peak(&self) {
        self.peak.store(self.in_use.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// Host memory that interpret-mode devices allocate (they share the host's memory, so one count).
pub static INTERPRET: MemCounter = MemCounter::new();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_follows_allocations_and_resets_to_what_is_held() {
        let c = MemCounter::new();
        c.add(100);
        c.add(50);
        c.sub(100);
        assert_eq!(c.stats(), MemStats { in_use: 50, peak: 150 });
        c.reset_peak();
        assert_eq!(c.stats().peak, 50);
        c.add(10);
        assert_eq!(c.stats().peak, 60);
    }
}
