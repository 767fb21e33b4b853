//! The delayed-message scenario (`--delayed N`): how late an `x-delayed-message`
//! exchange fires with many messages scheduled. N messages are published (with
//! confirms, as fast as the broker takes them) to a delayed exchange of type direct,
//! each with an `x-delay` chosen so that the due times spread evenly over
//! `delay_window`, starting `delay_lead` after the first publish, in an order that
//! jumps around the window (not in due order). Each body carries its due time instead
//! of its send time, so the consumer's latency is the lateness: arrival − due.
//!
//! The due time is counted from the generator's clock as it writes the publish; the
//! broker counts from its receipt. With `--rate`, publishes are paced so that the
//! broker reads each as it comes; unpaced, up to 1,000 unconfirmed publishes queue in
//! front of the broker's reader, and the time they wait there counts as lateness too.

use super::*;

/// Spreads message i over [0, 1) in a jumping order (the golden ratio's multiples).
fn spread(i: u64) -> f64 {
    (i as f64 * 0.618_033_988_749_895).fract()
}

/// Publishes the scheduled messages, then waits for the consumer to read them all (or
/// for the last due time plus 10 s).
pub(super) async fn delayed(s: &Scenario) -> io::Result<Report> {
    let exchange = format!("{}-delayed", s.prefix);
    let queue = format!("{}-delayed-q", s.prefix);
    let mut c = connect(s).await?;
    c.delete_queue(&queue).await?;
    c.declare_exchange_with(
        &exchange,
        "x-delayed-message",
        s.persistent,
        &[("x-delayed-type", Value::Str("direct".into()))],
    )
    .await?;
    c.declare_queue(&queue, s.persistent, &[]).await?;
    c.bind(&queue, &exchange, "k").await?;
    let epoch = Instant::now();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut sc = s.clone();
    sc.auto_ack = true;
    let reader = tokio::spawn(consumer(
        sc,
        queue.clone(),
        None,
        epoch,
        stop.clone(),
        Some(s.delayed),
        counters.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let first_due = now_ns(epoch) + s.delay_lead.as_nanos() as u64;
    let window = s.delay_window.as_nanos() as u64;
    let (published, confirmed) = publish(s, &mut c, &exchange, epoch, first_due, window).await?;
    let publish_secs = start.elapsed().as_secs_f64();
    // every message is due by first_due + window; allow 10 s more for stragglers
    let end = first_due + window + 10_000_000_000;
    while counters.consumed.load(Ordering::Relaxed) < published && now_ns(epoch) < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    reader.await.map_err(io::Error::other)??;
    let seconds = start.elapsed().as_secs_f64();
    let _ = c.delete_queue(&queue).await;
    let consumed = counters.consumed.load(Ordering::Relaxed);
    let lateness = std::mem::take(
        &mut *counters
            .latencies
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?,
    );
    Ok(Report {
        seconds,
        published,
        confirmed,
        consumed,
        publish_rate: published as f64 / publish_secs.max(1e-9),
        consume_rate: consumed as f64 / seconds,
        latency_us: stats::percentiles(lateness),
        ..Report::default()
    })
}

/// Publishes `s.delayed` messages with confirms (1000 outstanding); returns how many
/// were published and confirmed.
async fn publish(
    s: &Scenario,
    c: &mut Conn,
    exchange: &str,
    epoch: Instant,
    first_due: u64,
    window: u64,
) -> io::Result<(u64, u64)> {
    c.confirm_select().await?;
    let mut body = vec![0u8; s.size.max(8)];
    let mut out = BytesMut::new();
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut pending = BTreeMap::new();
    let mut unused = Vec::new();
    let began = now_ns(epoch);
    while sent < s.delayed {
        out.clear();
        let mut now = now_ns(epoch);
        let mut n = (s.delayed - sent).min(100).min(1000 - (sent - acked));
        if s.rate > 0 {
            // paced: message i leaves at i / rate, so that the broker reads each one as
            // it comes, and the lateness measured is the exchange's, not the time a
            // flood of publishes queues in front of the broker's reader
            let ahead =
                (now.saturating_sub(began) as u128 * u128::from(s.rate) / 1_000_000_000) as u64;
            n = n.min(ahead.saturating_sub(sent).max(1));
            let at = began + (sent as u128 * 1_000_000_000 / u128::from(s.rate)) as u64;
            if at > now {
                tokio::time::sleep(Duration::from_nanos(at - now)).await;
                now = now_ns(epoch);
            }
        }
        for _ in 0..n {
            let due = first_due + (spread(sent) * window as f64) as u64;
            // whole ms, at least 1: a publish after its due time is late by that much
            let delay_ms = (due.saturating_sub(now) / 1_000_000).max(1);
            let due = now + delay_ms * 1_000_000;
            body[..8].copy_from_slice(&due.to_be_bytes());
            let headers = [("x-delay", Value::Long(delay_ms as i64))];
            amqp::publish_with_headers(&mut out, 1, exchange, "k", &body, s.persistent, &headers);
            sent += 1;
            pending.insert(sent, now);
        }
        if n > 0 {
            c.wr.write_all(&out).await?;
        }
        if sent - acked >= 1000 || n == 0 || sent == s.delayed {
            match c.next_within(Duration::from_millis(200)).await {
                Some(Ok(Frame::Method(60, 80, a))) => {
                    acked += settle(&a, &mut pending, now_ns(epoch), &mut unused);
                }
                Some(Ok(Frame::Method(60, 120, _))) => {
                    return Err(io::Error::other("the broker nacked a publish"));
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(e),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked < sent && Instant::now() < deadline {
        if let Some(Ok(Frame::Method(60, 80, a))) = c.next_within(Duration::from_millis(200)).await
        {
            acked += settle(&a, &mut pending, now_ns(epoch), &mut unused);
        }
    }
    Ok((sent, acked))
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn due_times_cover_the_window_evenly() {
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let f = spread(i);
            assert!((0.0..1.0).contains(&f));
            buckets[(f * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|b| (900..1100).contains(b)),
            "{buckets:?}"
        );
    }
}
