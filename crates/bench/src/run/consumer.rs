//! One consumer: subscribes (declaring its queue in the flow scenarios, with a
//! stream's `x-stream-offset`), reads deliveries, acks every `--multiple-ack`, and
//! records latency and when its first delivery came.

use super::*;

/// Consumes until `stop` (or `limit` messages), recording latency.
/// One consumer; with `declare_into` (the fanout exchange's name, or "") it declares,
/// purges and binds its queue first.
pub(super) async fn consumer(
    s: Scenario,
    queue: String,
    declare_into: Option<String>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
    limit: Option<u64>,
    c: Arc<Counters>,
) -> io::Result<()> {
    let mut conn = connect(&s).await?;
    if let Some(exchange) = declare_into {
        declare(&mut conn, &s, &queue, &exchange).await?;
    }
    if !s.auto_ack {
        conn.qos(s.prefetch).await?;
    }
    let consume_at = now_ns(epoch);
    conn.consume(&queue, s.auto_ack, &consume_args(&s)).await?;
    let mut offset: Option<i64> = None;
    let mut last_at = 0;
    let mut lat = Vec::with_capacity(1 << 16);
    let mut got: u64 = 0;
    let mut tag: u64 = 0;
    let mut unacked: u64 = 0;
    let mut remaining: u64 = 0;
    let mut first_seen = false;
    let mut out = BytesMut::new();
    // when the socket read that brought the frames being parsed returned: the arrival
    // time of every message in it (one clock read per read, not per message, so that
    // the generator's own cost stays small)
    let mut read_at = now_ns(epoch);
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| got < l) {
        let reads = conn.reads;
        let Some(f) = conn.next_within(Duration::from_millis(100)).await else {
            continue;
        };
        let f = f?;
        if conn.reads != reads {
            read_at = now_ns(epoch);
        }
        let mut done = false;
        match f {
            Frame::Method(60, 60, a) => {
                let n = a[0] as usize;
                tag = u64::from_be_bytes([
                    a[1 + n],
                    a[2 + n],
                    a[3 + n],
                    a[4 + n],
                    a[5 + n],
                    a[6 + n],
                    a[7 + n],
                    a[8 + n],
                ]);
                first_seen = false;
            }
            Frame::Header(size, o) => {
                offset = o;
                remaining = size;
                done = size == 0;
            }
            Frame::Body(first, len) => {
                // a JSON body (the schema scenario) carries no timestamp
                if !first_seen && len >= 8 && first[0] != b'{' {
                    first_seen = true;
                    let ts = u64::from_be_bytes(first);
                    lat.push(read_at.saturating_sub(ts) / 1000);
                }
                remaining = remaining.saturating_sub(len as u64);
                done = remaining == 0;
            }
            _ => {}
        }
        if done {
            got += 1;
            if got == 1 {
                if let Ok(mut f) = c.firsts.lock() {
                    f.push((read_at.saturating_sub(consume_at), read_at, offset));
                }
            }
            last_at = read_at;
            c.consumed.fetch_add(1, Ordering::Relaxed);
            if !s.auto_ack {
                unacked += 1;
                if unacked >= s.multiple_ack.max(1) {
                    out.clear();
                    amqp::ack(&mut out, tag, true);
                    conn.wr.write_all(&out).await?;
                    unacked = 0;
                }
            }
        }
    }
    if unacked > 0 {
        out.clear();
        amqp::ack(&mut out, tag, true);
        let _ = conn.wr.write_all(&out).await;
    }
    c.last_ns.fetch_max(last_at, Ordering::Relaxed);
    if let Ok(mut l) = c.latencies.lock() {
        l.extend(lat);
    }
    Ok(())
}

/// basic.consume's arguments: a stream consumer's `x-stream-offset`.
fn consume_args(s: &Scenario) -> Vec<(&'static str, Value)> {
    s.stream_offset
        .map(|o| vec![("x-stream-offset", o.value())])
        .unwrap_or_default()
}
