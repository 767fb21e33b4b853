//! A minimal AMQP 0-9-1 client for load generation: pre-encoded frames written in
//! batches, a frame reader that looks only at what the benchmark needs (deliveries,
//! confirms, the first 8 body bytes). A general client (lapin) spends more CPU per
//! message than a fast broker, and would be what the figures measure.

use bytes::{Buf, BufMut, BytesMut};
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// frame_max we ask for.
pub const FRAME_MAX: u32 = 131_072;

fn shortstr(out: &mut BytesMut, s: &str) {
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

/// Appends a method frame.
pub fn method(out: &mut BytesMut, channel: u16, class: u16, method: u16, args: &[u8]) {
    out.put_u8(1);
    out.put_u16(channel);
    out.put_u32(4 + args.len() as u32);
    out.put_u16(class);
    out.put_u16(method);
    out.put_slice(args);
    out.put_u8(0xce);
}

/// One basic.publish (method, content header, body frames), with a `content_type`
/// property when given (the schema scenario's `application/json`).
pub fn publish(
    out: &mut BytesMut,
    channel: u16,
    exchange: &str,
    key: &str,
    body: &[u8],
    persistent: bool,
    content_type: Option<&str>,
) {
    // property flags: content-type (0x8000), delivery-mode (0x1000)
    let mut props = BytesMut::new();
    let flags =
        if persistent { 0x1000 } else { 0 } | if content_type.is_some() { 0x8000 } else { 0 };
    props.put_u16(flags);
    if let Some(ct) = content_type {
        shortstr(&mut props, ct);
    }
    if persistent {
        props.put_u8(2);
    }
    publish_frames(out, channel, exchange, key, body, &props);
}

/// Appends basic.publish + header + body frames for one message with headers (the
/// delayed scenario's `x-delay`).
pub fn publish_with_headers(
    out: &mut BytesMut,
    channel: u16,
    exchange: &str,
    key: &str,
    body: &[u8],
    persistent: bool,
    headers: &[(&str, Value)],
) {
    // property flags: headers (0x2000), delivery-mode (0x1000)
    let mut props = BytesMut::new();
    props.put_u16(if persistent { 0x3000 } else { 0x2000 });
    table(&mut props, headers);
    if persistent {
        props.put_u8(2);
    }
    publish_frames(out, channel, exchange, key, body, &props);
}

/// The frames of one publish: basic.publish, the content header with the encoded
/// property flags and properties `props`, and the body in frame-max chunks.
fn publish_frames(
    out: &mut BytesMut,
    channel: u16,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: &[u8],
) {
    let mut args = BytesMut::with_capacity(8 + exchange.len() + key.len());
    args.put_u16(0);
    shortstr(&mut args, exchange);
    shortstr(&mut args, key);
    args.put_u8(0);
    method(out, channel, 60, 40, &args);
    out.put_u8(2);
    out.put_u16(channel);
    out.put_u32(12 + props.len() as u32);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.put_slice(props);
    out.put_u8(0xce);
    for chunk in body.chunks((FRAME_MAX - 8) as usize) {
        out.put_u8(3);
        out.put_u16(channel);
        out.put_u32(chunk.len() as u32);
        out.put_slice(chunk);
        out.put_u8(0xce);
    }
}

/// One value in a field table the generator sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// 'S': a long string.
    Str(String),
    /// 'l': a signed 64-bit integer.
    Long(i64),
    /// 'T': a timestamp, seconds since the epoch.
    Timestamp(u64),
}

/// Encodes a field table (its u32 length first), for queue.declare and basic.consume
/// arguments.
pub fn table(out: &mut BytesMut, entries: &[(&str, Value)]) {
    let mut t = BytesMut::new();
    for (k, v) in entries {
        shortstr(&mut t, k);
        match v {
            Value::Str(s) => {
                t.put_u8(b'S');
                t.put_u32(s.len() as u32);
                t.put_slice(s.as_bytes());
            }
            Value::Long(n) => {
                t.put_u8(b'l');
                t.put_i64(*n);
            }
            Value::Timestamp(n) => {
                t.put_u8(b'T');
                t.put_u64(*n);
            }
        }
    }
    out.put_u32(t.len() as u32);
    out.put_slice(&t);
}

/// The `x-stream-offset` header of a content header frame's payload, if its
/// properties have headers (flag 0x2000) holding one as a long ('l'). A scan for the
/// key rather than a table decoder: the generator publishes no headers, so a stream's
/// is the only one, and only deliveries with headers pay for the scan.
fn stream_offset(payload: &[u8]) -> Option<i64> {
    const KEY: &[u8] = b"\x0fx-stream-offsetl";
    let flags = u16::from_be_bytes([*payload.get(12)?, *payload.get(13)?]);
    if flags & 0x2000 == 0 {
        return None;
    }
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    Some(i64::from_be_bytes(
        payload.get(at..at + 8)?.try_into().ok()?,
    ))
}

/// One frame as the reader sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A method: class, method, arguments.
    Method(u16, u16, Vec<u8>),
    /// A content header: body size, and the `x-stream-offset` header's value when the
    /// properties carry one (a stream's deliveries).
    Header(u64, Option<i64>),
    /// A body frame: its first 8 bytes (or fewer) and its length.
    Body([u8; 8], usize),
    /// A heartbeat.
    Heartbeat,
}

/// Splits one frame off `buf`; `None` if it is incomplete.
pub fn parse(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
    if buf.len() < 7 {
        return Ok(None);
    }
    let kind = buf[0];
    let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
    if buf.len() < 8 + size {
        return Ok(None);
    }
    if buf[7 + size] != 0xce {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame end missing",
        ));
    }
    buf.advance(7);
    let payload = buf.split_to(size);
    buf.advance(1);
    Ok(Some(match kind {
        1 if size >= 4 => {
            let class = u16::from_be_bytes([payload[0], payload[1]]);
            let m = u16::from_be_bytes([payload[2], payload[3]]);
            Frame::Method(class, m, payload[4..].to_vec())
        }
        2 if size >= 12 => Frame::Header(
            u64::from_be_bytes([
                payload[4],
                payload[5],
                payload[6],
                payload[7],
                payload[8],
                payload[9],
                payload[10],
                payload[11],
            ]),
            stream_offset(&payload),
        ),
        3 => {
            let mut first = [0u8; 8];
            let n = payload.len().min(8);
            first[..n].copy_from_slice(&payload[..n]);
            Frame::Body(first, payload.len())
        }
        8 => Frame::Heartbeat,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected frame type {kind}"),
            ))
        }
    }))
}

/// A connection after the handshake, with channel 1 open.
pub struct Conn {
    /// Read half.
    pub rd: OwnedReadHalf,
    /// Write half.
    pub wr: OwnedWriteHalf,
    /// Unparsed input.
    pub buf: BytesMut,
    /// Socket reads so far (a caller tells whether a frame came from a new read).
    pub reads: u64,
}

impl Conn {
    /// Connects (with a send buffer of `sndbuf` bytes unless 0), logs in (PLAIN) and
    /// opens channel 1.
    pub async fn open(
        addr: &str,
        user: &str,
        pass: &str,
        vhost: &str,
        sndbuf: usize,
    ) -> io::Result<Conn> {
        let s = if sndbuf == 0 {
            TcpStream::connect(addr).await?
        } else {
            let to = tokio::net::lookup_host(addr)
                .await?
                .next()
                .ok_or_else(|| io::Error::other("no address"))?;
            let sock = if to.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            sock.set_send_buffer_size(u32::try_from(sndbuf).unwrap_or(u32::MAX))?;
            sock.connect(to).await?
        };
        s.set_nodelay(true)?;
        let (rd, wr) = s.into_split();
        let mut c = Conn {
            rd,
            wr,
            buf: BytesMut::with_capacity(256 << 10),
            reads: 0,
        };
        c.wr.write_all(b"AMQP\x00\x00\x09\x01").await?;
        c.expect(10, 10).await?;
        let mut a = BytesMut::new();
        a.put_u32(0); // empty client-properties
        shortstr(&mut a, "PLAIN");
        let resp = format!("\0{user}\0{pass}");
        a.put_u32(resp.len() as u32);
        a.put_slice(resp.as_bytes());
        shortstr(&mut a, "en_US");
        let mut out = BytesMut::new();
        method(&mut out, 0, 10, 11, &a);
        c.wr.write_all(&out).await?;
        let tune = c.expect(10, 30).await?;
        let channel_max = u16::from_be_bytes([tune[0], tune[1]]);
        let mut t = BytesMut::new();
        t.put_u16(channel_max);
        t.put_u32(FRAME_MAX);
        t.put_u16(0);
        out.clear();
        method(&mut out, 0, 10, 31, &t);
        let mut o = BytesMut::new();
        shortstr(&mut o, vhost);
        shortstr(&mut o, "");
        o.put_u8(0);
        method(&mut out, 0, 10, 40, &o);
        c.wr.write_all(&out).await?;
        c.expect(10, 41).await?;
        c.call(20, 10, &[0], 11).await?;
        Ok(c)
    }

    /// The next frame within `t` (`None` on timeout). A frame already buffered comes
    /// at once, without a timer: arming one per frame costs a clock read each.
    pub async fn next_within(&mut self, t: std::time::Duration) -> Option<io::Result<Frame>> {
        match parse(&mut self.buf) {
            Ok(Some(f)) => Some(Ok(f)),
            Err(e) => Some(Err(e)),
            Ok(None) => tokio::time::timeout(t, self.next()).await.ok(),
        }
    }

    /// Reads until a frame parses (or the socket ends).
    pub async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(f) = parse(&mut self.buf)? {
                return Ok(f);
            }
            self.reads += 1;
            if self.rd.read_buf(&mut self.buf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "broker closed the connection",
                ));
            }
        }
    }

    /// Waits for a method, failing on a close.
    pub async fn expect(&mut self, class: u16, m: u16) -> io::Result<Vec<u8>> {
        loop {
            if let Frame::Method(c, mm, args) = self.next().await? {
                if (c, mm) == (class, m) {
                    return Ok(args);
                }
                if (c, mm) == (10, 50) || (c, mm) == (20, 40) {
                    let code = u16::from_be_bytes([args[0], args[1]]);
                    let len = args[2] as usize;
                    let text = String::from_utf8_lossy(&args[3..3 + len]).into_owned();
                    return Err(io::Error::other(format!(
                        "closed by the broker: {code} {text}"
                    )));
                }
            }
        }
    }

    /// Sends a method on channel 1 and waits for its reply method.
    pub async fn call(
        &mut self,
        class: u16,
        m: u16,
        args: &[u8],
        reply: u16,
    ) -> io::Result<Vec<u8>> {
        let mut out = BytesMut::new();
        method(&mut out, 1, class, m, args);
        self.wr.write_all(&out).await?;
        self.expect(class, reply).await
    }

    /// queue.declare (durable or not; exclusive=false) with arguments (`x-queue-type`).
    pub async fn declare_queue(
        &mut self,
        name: &str,
        durable: bool,
        args: &[(&str, Value)],
    ) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, name);
        a.put_u8(if durable { 0b10 } else { 0 });
        table(&mut a, args);
        self.call(50, 10, &a, 11).await.map(|_| ())
    }

    /// queue.purge.
    pub async fn purge(&mut self, name: &str) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, name);
        a.put_u8(0);
        self.call(50, 30, &a, 31).await.map(|_| ())
    }

    /// queue.delete.
    pub async fn delete_queue(&mut self, name: &str) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, name);
        a.put_u8(0);
        self.call(50, 40, &a, 41).await.map(|_| ())
    }

    /// exchange.declare (not durable).
    pub async fn declare_exchange(&mut self, name: &str, kind: &str) -> io::Result<()> {
        self.declare_exchange_with(name, kind, false, &[]).await
    }

    /// exchange.declare (not durable) with arguments (the schema scenario's
    /// `x-schema`).
    pub async fn declare_exchange_args(
        &mut self,
        name: &str,
        kind: &str,
        args: &[(&str, Value)],
    ) -> io::Result<()> {
        self.declare_exchange_with(name, kind, false, args).await
    }

    /// exchange.declare with arguments, durable or not.
    pub async fn declare_exchange_with(
        &mut self,
        name: &str,
        kind: &str,
        durable: bool,
        args: &[(&str, Value)],
    ) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, name);
        shortstr(&mut a, kind);
        a.put_u8(if durable { 0x02 } else { 0 });
        table(&mut a, args);
        self.call(40, 10, &a, 11).await.map(|_| ())
    }

    /// queue.bind.
    pub async fn bind(&mut self, queue: &str, exchange: &str, key: &str) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, queue);
        shortstr(&mut a, exchange);
        shortstr(&mut a, key);
        a.put_u8(0);
        a.put_u32(0);
        self.call(50, 20, &a, 21).await.map(|_| ())
    }

    /// confirm.select.
    pub async fn confirm_select(&mut self) -> io::Result<()> {
        self.call(85, 10, &[0], 11).await.map(|_| ())
    }

    /// basic.qos.
    pub async fn qos(&mut self, prefetch: u16) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u32(0);
        a.put_u16(prefetch);
        a.put_u8(0);
        self.call(60, 10, &a, 11).await.map(|_| ())
    }

    /// basic.consume with arguments (a stream consumer's `x-stream-offset`).
    pub async fn consume(
        &mut self,
        queue: &str,
        no_ack: bool,
        args: &[(&str, Value)],
    ) -> io::Result<()> {
        let mut a = BytesMut::new();
        a.put_u16(0);
        shortstr(&mut a, queue);
        shortstr(&mut a, "");
        a.put_u8(if no_ack { 0b10 } else { 0 });
        table(&mut a, args);
        self.call(60, 20, &a, 21).await.map(|_| ())
    }
}

/// basic.ack frame bytes.
pub fn ack(out: &mut BytesMut, tag: u64, multiple: bool) {
    let mut a = [0u8; 9];
    a[..8].copy_from_slice(&tag.to_be_bytes());
    a[8] = u8::from(multiple);
    method(out, 1, 60, 80, &a);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_parse_back() {
        let mut out = BytesMut::new();
        let body = vec![7u8; 300_000];
        publish(&mut out, 1, "x", "k", &body, true, None);
        let mut frames = vec![];
        while let Some(f) = parse(&mut out).unwrap() {
            frames.push(f);
        }
        assert!(matches!(frames[0], Frame::Method(60, 40, _)));
        assert_eq!(frames[1], Frame::Header(300_000, None));
        let total: usize = frames[2..]
            .iter()
            .map(|f| match f {
                Frame::Body(_, n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 300_000);
        assert!(out.is_empty());
    }

    #[test]
    fn a_stream_delivery_header_gives_its_offset() {
        // content header: class 60, weight, size 1024, flags headers + delivery-mode
        let mut h = BytesMut::new();
        h.put_u16(60);
        h.put_u16(0);
        h.put_u64(1024);
        h.put_u16(0x2000 | 0x1000);
        table(&mut h, &[("x-stream-offset", Value::Long(1_234_567))]);
        h.put_u8(2);
        let mut out = BytesMut::new();
        out.put_u8(2);
        out.put_u16(1);
        out.put_u32(h.len() as u32);
        out.put_slice(&h);
        out.put_u8(0xce);
        assert_eq!(
            parse(&mut out).unwrap(),
            Some(Frame::Header(1024, Some(1_234_567)))
        );
        // without the headers flag nothing is scanned
        let mut plain = BytesMut::new();
        publish(&mut plain, 1, "", "q", &[0; 8], true, None);
        let _ = parse(&mut plain).unwrap();
        assert_eq!(parse(&mut plain).unwrap(), Some(Frame::Header(8, None)));
    }

    #[test]
    fn field_tables_encode_as_amqp_reads_them() {
        let mut t = BytesMut::new();
        table(
            &mut t,
            &[
                ("x-queue-type", Value::Str("stream".into())),
                ("x-stream-offset", Value::Timestamp(5)),
            ],
        );
        let want: &[u8] = b"\x0cx-queue-typeS\x00\x00\x00\x06stream\x0fx-stream-offsetT\x00\x00\x00\x00\x00\x00\x00\x05";
        assert_eq!(&t[..4], &(want.len() as u32).to_be_bytes());
        assert_eq!(&t[4..], want);
    }

    #[test]
    fn incomplete_input_is_not_an_error() {
        let mut full = BytesMut::new();
        method(&mut full, 1, 60, 80, &[0; 9]);
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(parse(&mut part).unwrap(), None);
        }
    }
}
