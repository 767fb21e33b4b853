//! Reading what queues already hold: a stream filled first (`--queue-type stream
//! --prefill N`, confirmed) and read by every consumer from its `--stream-offset`, or
//! a stream (or queue) left by an earlier run read without publishing
//! (`--no-publish`). Reports the read rate, each consumer's time to its first delivery
//! and the `x-stream-offset` it started at (a seek by timestamp lands where it says).

use super::*;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where a stream consumer starts: RabbitMQ's `x-stream-offset` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOffset {
    /// The oldest message kept.
    First,
    /// The last chunk written.
    Last,
    /// Messages written from now on.
    Next,
    /// This offset (consumer i of a queue adds i × `--offset-step`).
    Offset(u64),
    /// The first chunk written at or after this time (seconds since the epoch,
    /// sent as an AMQP timestamp, as pika sends a datetime).
    Timestamp(u64),
}

impl std::str::FromStr for StreamOffset {
    type Err = String;
    fn from_str(s: &str) -> Result<StreamOffset, String> {
        Ok(match s {
            "first" => StreamOffset::First,
            "last" => StreamOffset::Last,
            "next" => StreamOffset::Next,
            _ => match s.strip_prefix("timestamp:") {
                Some(t) => StreamOffset::Timestamp(
                    t.parse()
                        .map_err(|_| format!("timestamp:<seconds since the epoch>, not {t}"))?,
                ),
                None => StreamOffset::Offset(s.parse().map_err(|_| {
                    format!("first, last, next, <offset> or timestamp:<secs>, not {s}")
                })?),
            },
        })
    }
}

impl StreamOffset {
    /// The argument's value on the wire.
    pub fn value(self) -> Value {
        match self {
            StreamOffset::First => Value::Str("first".into()),
            StreamOffset::Last => Value::Str("last".into()),
            StreamOffset::Next => Value::Str("next".into()),
            StreamOffset::Offset(n) => Value::Long(i64::try_from(n).unwrap_or(i64::MAX)),
            StreamOffset::Timestamp(t) => Value::Timestamp(t),
        }
    }

    /// Consumer `i`'s start: a numeric offset moves on by `step` per consumer.
    fn nth(self, i: usize, step: u64) -> StreamOffset {
        match self {
            StreamOffset::Offset(n) => StreamOffset::Offset(n + i as u64 * step),
            other => other,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Publishes `per` messages into each queue with confirms (window `--confirm`, 1,000
/// if unset); returns the seconds it took.
async fn fill(s: &Scenario, queues: &[String], per: u64, c: &Arc<Counters>) -> io::Result<f64> {
    let epoch = Instant::now();
    let never = Arc::new(AtomicBool::new(false));
    let mut sc = s.clone();
    if sc.confirm == 0 {
        sc.confirm = 1000;
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for q in queues {
        tasks.push(tokio::spawn(producer(
            sc.clone(),
            String::new(),
            vec![q.clone()],
            epoch,
            never.clone(),
            Some(per),
            0.0,
            c.clone(),
        )));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Fills the streams (unless `--no-publish`), then `--consumers` consumers per queue
/// read from their offsets: `--count` messages each (or the prefill), or for
/// `--duration`. A run with a count also ends at `--duration`, so a broker that
/// delivers less than asked cannot hold it forever.
pub(super) async fn read(s: &Scenario) -> io::Result<Report> {
    let (_, queues) = setup(s, !s.no_publish).await?;
    let fill_c = Arc::new(Counters::default());
    let mut r = Report::default();
    let per = s.prefill / queues.len() as u64;
    if !s.no_publish && per > 0 {
        r.prefill_started_unix_ms = Some(unix_ms());
        let secs = fill(s, &queues, per, &fill_c).await?;
        r.prefill_ended_unix_ms = Some(unix_ms());
        r.published = fill_c.published.load(Ordering::Relaxed);
        r.confirmed = fill_c.confirmed.load(Ordering::Relaxed);
        r.prefill_publish_rate = Some(r.published as f64 / secs);
        r.publish_rate = r.published as f64 / secs;
    }
    let limit = match (s.count, s.no_publish) {
        (0, true) => None,
        (0, false) => Some(per),
        (n, _) => Some(n),
    };
    let offset = s.stream_offset.or_else(|| {
        // after a fill, read what was filled
        (s.is_stream() && !s.no_publish).then_some(StreamOffset::First)
    });
    let c = Arc::new(Counters::default());
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for q in &queues {
        for i in 0..s.consumers {
            let mut sc = s.clone();
            sc.stream_offset = offset.map(|o| o.nth(i, s.offset_step));
            tasks.push(tokio::spawn(consumer(
                sc,
                q.clone(),
                None,
                epoch,
                stop.clone(),
                limit,
                c.clone(),
            )));
        }
    }
    let all = async {
        for t in tasks {
            t.await.map_err(io::Error::other)??;
        }
        Ok::<(), io::Error>(())
    };
    tokio::pin!(all);
    let finished = tokio::time::timeout(s.duration, &mut all).await.ok();
    let consumed = c.consumed.load(Ordering::Relaxed);
    let seconds = start.elapsed().as_secs_f64();
    match finished {
        Some(done) => done?,
        None => {
            stop.store(true, Ordering::Relaxed);
            all.await?;
        }
    }
    if !s.keep {
        let _ = cleanup(s).await;
    }
    let firsts = std::mem::take(&mut *c.firsts.lock().map_err(|_| io::Error::other("poisoned"))?);
    r.first_delivery_ms = firsts.iter().map(|f| f.0 as f64 / 1e6).reduce(f64::max);
    r.first_offsets = firsts.iter().filter_map(|f| f.2).collect();
    let first_at = firsts.iter().map(|f| f.1).min();
    let last_at = c.last_ns.load(Ordering::Relaxed);
    r.read_rate_after_first = first_at
        .filter(|f| last_at > *f)
        .map(|f| consumed as f64 / ((last_at - f) as f64 / 1e9));
    r.seconds = r
        .prefill_publish_rate
        .map_or(0.0, |rate| r.published as f64 / rate)
        + seconds;
    r.consumed = consumed;
    r.consume_rate = consumed as f64 / seconds;
    r.prefill_drain_rate = (s.consumers > 0).then_some(r.consume_rate);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_as_the_command_line_writes_them() {
        let p = |s: &str| s.parse::<StreamOffset>();
        assert_eq!(p("first"), Ok(StreamOffset::First));
        assert_eq!(p("next"), Ok(StreamOffset::Next));
        assert_eq!(p("last"), Ok(StreamOffset::Last));
        assert_eq!(p("1000"), Ok(StreamOffset::Offset(1000)));
        assert_eq!(
            p("timestamp:1700000000"),
            Ok(StreamOffset::Timestamp(1_700_000_000))
        );
        assert!(p("timestamp:soon").is_err());
        assert!(p("middle").is_err());
        assert_eq!(
            StreamOffset::Offset(10).nth(3, 1000),
            StreamOffset::Offset(3010)
        );
        assert_eq!(StreamOffset::First.nth(3, 1000), StreamOffset::First);
        assert_eq!(
            StreamOffset::Timestamp(7).value(),
            Value::Timestamp(7),
            "sent as 'T', seconds"
        );
    }
}
