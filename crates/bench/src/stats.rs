//! Latency samples and their percentiles, process CPU and memory readings.

use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Percentiles of latency samples (microseconds), nearest-rank.
pub fn percentiles(mut samples: Vec<u64>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let n = samples.len();
        let i = (p * n as f64 / 100.0 - 1e-9).ceil() as usize;
        samples[i.clamp(1, n) - 1] as f64
    };
    Percentiles {
        count: samples.len(),
        p50: rank(50.0),
        p99: rank(99.0),
        p999: rank(99.9),
        max: samples[samples.len() - 1] as f64,
    }
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_seconds() -> f64 {
    // from /proc, as for the broker (getrusage would need unsafe code)
    proc_cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name, which is in parentheses and may contain spaces
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    100.0
}

/// Resident memory of a process in bytes (VmRSS).
pub fn proc_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = percentiles((1..=1000).collect());
        assert_eq!(
            (p.count, p.p50, p.p99, p.p999, p.max),
            (1000, 500.0, 990.0, 999.0, 1000.0)
        );
        let one = percentiles(vec![42]);
        assert_eq!((one.p50, one.p999, one.max), (42.0, 42.0, 42.0));
        assert_eq!(percentiles(vec![]), Percentiles::default());
    }

    #[test]
    fn reads_its_own_process() {
        assert!(proc_rss(std::process::id()).unwrap() > 0);
        assert!(own_cpu_seconds() >= 0.0);
    }
}
