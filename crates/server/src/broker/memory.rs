//! The memory alarm: what the broker process really uses (its resident set, as the OOM
//! killer sees it), sampled every [`SAMPLE_EVERY`] on a thread of its own, against the
//! high watermark. Above it every publishing connection is blocked (RabbitMQ's memory
//! alarm); below it they are let go.
//!
//! Why the resident set and not a count of message bytes: transaction buffers, consumer
//! write buffers, partly assembled bodies and read blocks pinned by a retained body all
//! cost memory no queue counts. jemalloc keeps freed pages for a while before it returns
//! them, so a process over the watermark first asks it to return them (a purge) and
//! samples again: the alarm then reflects memory in use, not memory cached for reuse.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the process's memory is sampled. A fast publisher adds tens of MB a
/// second, so the alarm must come well within a second.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Process memory against the high watermark.
#[derive(Debug)]
pub struct MemoryMonitor {
    /// Publishers are blocked at or above this many bytes.
    limit: AtomicU64,
    /// Resident bytes at the last sample (0 until the first).
    used: AtomicU64,
    /// Bytes the allocator has handed out and not had back (jemalloc's
    /// `stats.allocated`) at the last sample.
    allocated: AtomicU64,
    /// Memory is above the watermark.
    alarm: AtomicBool,
}

impl MemoryMonitor {
    /// A monitor with `limit`; nothing is sampled until [`MemoryMonitor::watch`].
    pub fn new(limit: u64) -> Arc<MemoryMonitor> {
        Arc::new(MemoryMonitor {
            limit: AtomicU64::new(limit),
            used: AtomicU64::new(0),
            allocated: AtomicU64::new(0),
            alarm: AtomicBool::new(limit == 0),
        })
    }

    /// Samples now and then every [`SAMPLE_EVERY`] on a thread of its own, for as long
    /// as the monitor lives.
    pub fn watch(self: &Arc<Self>) {
        self.sample();
        let me = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("memory-monitor".into())
            .spawn(move || loop {
                std::thread::sleep(SAMPLE_EVERY);
                match me.upgrade() {
                    Some(m) => m.sample(),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the memory monitor: {e}");
        }
    }

    /// Reads the process's memory and raises or clears the alarm.
    pub fn sample(&self) {
        let limit = self.limit.load(Ordering::Relaxed);
        let mut used = resident_bytes().unwrap_or(0);
        if used >= limit && limit > 0 {
            // pages jemalloc keeps for reuse are not memory in use: return them first
            purge_allocator();
            used = resident_bytes().unwrap_or(used);
        }
        self.used.store(used, Ordering::Relaxed);
        self.allocated
            .store(allocated_bytes().unwrap_or(0), Ordering::Relaxed);
        self.set_alarm(used >= limit, used, limit);
    }

    fn set_alarm(&self, alarm: bool, used: u64, limit: u64) {
        if self.alarm.swap(alarm, Ordering::AcqRel) != alarm {
            if alarm {
                tracing::warn!(
                    used,
                    limit,
                    "memory alarm: the broker uses more memory than the high watermark, publishers blocked"
                );
            } else {
                tracing::info!(used, limit, "memory alarm cleared");
            }
        }
    }

    /// Whether memory use is at or above the watermark.
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Acquire)
    }

    /// Resident bytes at the last sample.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes allocated and in use at the last sample (0 where the allocator cannot say).
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Relaxed)
    }

    /// The high watermark in bytes.
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Sets the watermark at run time and re-evaluates the alarm at once.
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
        self.sample();
    }
}

/// The process's resident set in bytes (`/proc/self/statm`'s second field, in pages).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf reads a constant of the system and has no side effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// jemalloc's count of bytes handed out and not yet freed.
fn allocated_bytes() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    tikv_jemalloc_ctl::stats::allocated::read()
        .ok()
        .map(|b| b as u64)
}

/// Asks jemalloc to return the free pages of every arena to the OS now, instead of after
/// its decay delay.
fn purge_allocator() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge"; MALLCTL_ARENAS_ALL is 4096. It reads and writes
    // nothing: jemalloc refuses it (EPERM) unless every value pointer is null.
    #[allow(unsafe_code)]
    // SAFETY: the name is NUL-terminated and every value pointer is null, as the purge
    // control requires; jemalloc reads nothing else.
    let r = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        tracing::debug!("jemalloc purge failed: error {r}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_follows_the_resident_set_against_the_limit() {
        let m = MemoryMonitor::new(1);
        m.sample();
        assert!(m.used() > 1 << 20, "a process uses more than 1 MB");
        assert!(m.alarm());
        m.set_limit(u64::MAX);
        assert!(!m.alarm());
        m.set_limit(0);
        assert!(
            m.alarm(),
            "a watermark of 0 blocks every publisher (as RabbitMQ's)"
        );
    }
}
