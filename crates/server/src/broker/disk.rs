//! The disk alarm: free space on the data dir's filesystem, sampled once a second on a
//! thread of its own, against `--disk-free-limit` (RabbitMQ's `disk_free_limit`, 50 MB by
//! default). Below it every publishing connection is blocked as for the memory alarm, so
//! the store is never the one to find the disk full; consumers go on, and acks and
//! deletions free space until the alarm clears.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often free space is sampled (RabbitMQ checks every 10 s at most; the alarm must
/// come before a fast publisher fills the last of the disk).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Free space against the limit.
#[derive(Debug)]
pub struct DiskMonitor {
    /// Publishers are blocked below this many free bytes.
    limit: u64,
    /// Free bytes at the last sample (`u64::MAX` until the first).
    free: AtomicU64,
    /// Free space is below the limit.
    alarm: AtomicBool,
}

impl DiskMonitor {
    /// A monitor with `limit`; nothing is sampled until [`DiskMonitor::watch`].
    pub fn new(limit: u64) -> Arc<DiskMonitor> {
        Arc::new(DiskMonitor {
            limit,
            free: AtomicU64::new(u64::MAX),
            alarm: AtomicBool::new(false),
        })
    }

    /// Samples `dir`'s filesystem now and then every second on a thread of its own.
    pub fn watch(self: &Arc<Self>, dir: &Path) {
        self.sample(dir);
        let me = Arc::downgrade(self);
        let dir: PathBuf = dir.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("disk-monitor".into())
            .spawn(move || loop {
                std::thread::sleep(SAMPLE_EVERY);
                match me.upgrade() {
                    Some(m) => m.sample(&dir),
                    None => return,
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the disk monitor: {e}");
        }
    }

    fn sample(&self, dir: &Path) {
        let Some(free) = free_bytes(dir) else {
            return;
        };
        self.free.store(free, Ordering::Relaxed);
        let alarm = free < self.limit;
        if self.alarm.swap(alarm, Ordering::AcqRel) != alarm {
            if alarm {
                tracing::warn!(
                    free,
                    limit = self.limit,
                    "disk alarm: free space below the limit, publishers blocked"
                );
            } else {
                tracing::info!(free, limit = self.limit, "disk alarm cleared");
            }
        }
    }

    /// Whether free space is below the limit.
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Acquire)
    }

    /// Free bytes at the last sample (`u64::MAX` before the first).
    pub fn free(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Bytes available to the broker on `dir`'s filesystem.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    #[allow(unsafe_code)]
    // SAFETY: statvfs only reads the NUL-terminated path and writes the struct we pass.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut st) != 0 {
            return None;
        }
        st
    };
    #[allow(clippy::unnecessary_cast)]
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_above_the_free_space_raises_the_alarm_and_one_below_does_not() {
        let dir = std::env::temp_dir();
        let high = DiskMonitor::new(u64::MAX - 1);
        high.sample(&dir);
        assert!(high.alarm());
        assert!(high.free() < u64::MAX);
        let low = DiskMonitor::new(0);
        low.sample(&dir);
        assert!(!low.alarm());
    }
}
