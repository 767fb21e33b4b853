//! Resource limits as operators write them (RabbitMQ's forms): an absolute size with an
//! optional unit (`1073741824`, `512MB`, `2GiB`), or a fraction of the memory available
//! to the broker (`0.6`). The memory available is the machine's RAM, or the cgroup's
//! memory limit when one is set and lower (a container's limit, which the OOM killer
//! enforces, not the host's RAM).

use serde::Deserialize;
use std::str::FromStr;

/// An absolute byte count or a fraction of the available memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// Bytes.
    Absolute(u64),
    /// A multiple of the available memory (0.6 is 60%; a disk limit may exceed 1).
    Relative(f64),
}

impl Limit {
    /// The limit in bytes, given the memory available to the process.
    pub fn bytes(self, available: u64) -> u64 {
        match self {
            Limit::Absolute(b) => b,
            Limit::Relative(f) => (available as f64 * f) as u64,
        }
    }
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Limit, String> {
        let t = s.trim();
        if t.contains('.') {
            return match t.parse::<f64>() {
                Ok(f) if f.is_finite() && f >= 0.0 => Ok(Limit::Relative(f)),
                _ => Err(format!(
                    "'{s}' is neither a fraction of memory (0.6) nor a size (512MB)"
                )),
            };
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("'{s}' is not a size (a number of bytes, or with a unit: 512MB, 2GiB)")
        })?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "k" | "K" | "kB" | "KB" => 1000,
            "KiB" | "Ki" => 1 << 10,
            "M" | "MB" => 1_000_000,
            "MiB" | "Mi" => 1 << 20,
            "G" | "GB" => 1_000_000_000,
            "GiB" | "Gi" => 1 << 30,
            "T" | "TB" => 1_000_000_000_000,
            "TiB" | "Ti" => 1 << 40,
            other => {
                return Err(format!(
                    "unknown unit '{other}' in '{s}' (use kB, MB, GB, KiB, MiB, GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .map(Limit::Absolute)
            .ok_or_else(|| format!("'{s}' is too large"))
    }
}

/// In the config file a limit is a number (bytes, or a fraction when it has a decimal
/// point) or a string with a unit.
impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Limit::Absolute(n)),
            Raw::Float(f) => format!("{f:?}").parse().map_err(serde::de::Error::custom),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// Memory available to the broker: the machine's RAM, or the cgroup's limit (v2 or v1)
/// when one is set below it.
pub fn available_memory() -> u64 {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kb| kb * 1024);
    cgroup_limit().map_or(ram, |c| c.min(ram))
}

/// The memory limit of the cgroup the process runs in, if one is set.
fn cgroup_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    // v2: the process's own group, then the root's view
    let v2 = read("/proc/self/cgroup").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| format!("/sys/fs/cgroup{}/memory.max", p.trim_end_matches('/')))
    });
    let candidates = [
        v2,
        Some("/sys/fs/cgroup/memory.max".to_owned()),
        Some("/sys/fs/cgroup/memory/memory.limit_in_bytes".to_owned()),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|p| read(&p))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        // "max" (v2) fails to parse; v1 says "no limit" with a huge page-aligned number
        .find(|&v| v < (1 << 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_rabbitmq_writes_them() {
        assert_eq!("1000".parse(), Ok(Limit::Absolute(1000)));
        assert_eq!("512MB".parse(), Ok(Limit::Absolute(512_000_000)));
        assert_eq!("2GiB".parse(), Ok(Limit::Absolute(2 << 30)));
        assert_eq!("0.6".parse(), Ok(Limit::Relative(0.6)));
        assert_eq!("1.5".parse(), Ok(Limit::Relative(1.5)));
        assert!("12XB".parse::<Limit>().is_err());
        assert!("-0.4".parse::<Limit>().is_err());
        assert!("lots".parse::<Limit>().is_err());
        assert_eq!(Limit::Relative(0.5).bytes(1000), 500);
        assert_eq!(Limit::Absolute(7).bytes(1000), 7);
    }

    #[test]
    fn file_values_are_numbers_or_strings() {
        #[derive(Deserialize)]
        struct F {
            a: Limit,
            b: Limit,
            c: Limit,
        }
        let f: F = toml::from_str("a = 1000\nb = 0.4\nc = \"1GB\"").unwrap();
        assert_eq!(f.a, Limit::Absolute(1000));
        assert_eq!(f.b, Limit::Relative(0.4));
        assert_eq!(f.c, Limit::Absolute(1_000_000_000));
    }

    #[test]
    fn available_memory_is_positive_and_at_most_ram() {
        let m = available_memory();
        assert!(m > 0);
    }
}
