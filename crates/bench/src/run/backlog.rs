//! The two scenarios that are not a steady flow: a backlog published then drained
//! (`--prefill`), and idle connections held (`--idle-connections`).

use super::*;

/// Publish a backlog (with confirms), then drain it.
pub(super) async fn prefill(s: &Scenario) -> io::Result<Report> {
    let (_, queues) = setup(s, true).await?;
    let epoch = Instant::now();
    let c = Arc::new(Counters::default());
    let never = Arc::new(AtomicBool::new(false));
    let per = s.prefill / queues.len() as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut sc = s.clone();
    if sc.confirm == 0 {
        sc.confirm = 1000;
    }
    for q in &queues {
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
    let publish_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for q in &queues {
        tasks.push(tokio::spawn(consumer(
            s.clone(),
            q.clone(),
            None,
            epoch,
            never.clone(),
            Some(per),
            c.clone(),
        )));
    }
    for t in tasks {
        t.await.map_err(io::Error::other)??;
    }
    let drain_secs = start.elapsed().as_secs_f64();
    let _ = cleanup(s).await;
    let published = c.published.load(Ordering::Relaxed);
    let consumed = c.consumed.load(Ordering::Relaxed);
    Ok(Report {
        seconds: publish_secs + drain_secs,
        published,
        confirmed: c.confirmed.load(Ordering::Relaxed),
        consumed,
        publish_rate: published as f64 / publish_secs,
        consume_rate: consumed as f64 / drain_secs,
        prefill_publish_rate: Some(published as f64 / publish_secs),
        prefill_drain_rate: Some(consumed as f64 / drain_secs),
        ..Report::default()
    })
}

/// Opens idle connections, holds them, measures the broker's RSS growth per connection.
pub(super) async fn idle(s: &Scenario) -> io::Result<Report> {
    raise_nofile();
    let before = s.broker_pid.and_then(stats::proc_rss);
    let start = Instant::now();
    let mut held = Vec::with_capacity(s.idle_connections);
    let mut failures = 0usize;
    for _ in 0..s.idle_connections {
        // a broker out of file descriptors may accept and never answer
        match tokio::time::timeout(Duration::from_secs(3), connect(s)).await {
            Ok(Ok(c)) => held.push(c),
            _ => {
                failures += 1;
                if failures > 20 {
                    break;
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = s.broker_pid.and_then(stats::proc_rss);
    let n = held.len();
    drop(held);
    Ok(Report {
        seconds: start.elapsed().as_secs_f64(),
        idle_connections: Some(n),
        rss_per_connection: match (before, after) {
            (Some(b), Some(a)) if n > 0 => Some(a.saturating_sub(b) as f64 / n as f64),
            _ => None,
        },
        ..Report::default()
    })
}
