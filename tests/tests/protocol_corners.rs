//! Protocol corners answered as RabbitMQ 3.10 answers them, checked frame by frame against
//! a reference RabbitMQ over raw sockets (see docs/compatibility.md, "Protocol corners"):
//! table nesting at the 64-level limit, the frame size before tune-ok, methods on the
//! wrong channel, a content header of the wrong class, failed logins, content headers
//! larger than a consumer's frame_max, and a client-initiated connection.close.

use broker_tests::raw::{frame_bytes, method_payload, shortstr, Raw};
use broker_tests::*;
use broker_wire::frame::Frame;
use broker_wire::protocol::{basic, channel, connection, queue, AMQPClass};
use broker_wire::types::{AMQPValue, FieldTable, LongString};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// connection.close-ok on channel 0, byte for byte as RabbitMQ sends it.
const CLOSE_OK: [u8; 12] = [1, 0, 0, 0, 0, 0, 4, 0, 10, 0, 51, 0xCE];

/// A table nested `levels` deep: {"a": {"a": ... {}}}.
fn nested_table(levels: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for _ in 1..levels {
        let mut entry = vec![1u8, b'a', b'F'];
        entry.extend_from_slice(&inner);
        let mut t = (entry.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&entry);
        inner = t;
    }
    inner
}

/// A table holding arrays nested so that the innermost array is at depth `levels`.
fn nested_arrays(levels: usize) -> Vec<u8> {
    let mut inner: Vec<u8> = 0u32.to_be_bytes().to_vec();
    for _ in 2..levels {
        let mut v = vec![b'A'];
        v.extend_from_slice(&inner);
        let mut a = (v.len() as u32).to_be_bytes().to_vec();
        a.extend_from_slice(&v);
        inner = a;
    }
    let mut entry = vec![1u8, b'a', b'A'];
    entry.extend_from_slice(&inner);
    let mut t = (entry.len() as u32).to_be_bytes().to_vec();
    t.extend_from_slice(&entry);
    t
}

/// basic.publish to the default exchange, a content header with `headers` (an encoded
/// table) and a one-frame body.
fn publish_with_headers(ch: u16, queue: &str, headers: &[u8], body: &[u8]) -> Vec<u8> {
    publish_with_flags(ch, queue, 0x2000, headers, body)
}

/// Like [`publish_with_headers`], with the content header's property flags given.
fn publish_with_flags(ch: u16, queue: &str, flags: u16, headers: &[u8], body: &[u8]) -> Vec<u8> {
    let args = [
        &[0u8, 0][..],
        &shortstr(b""),
        &shortstr(queue.as_bytes()),
        &[0u8],
    ]
    .concat();
    let mut v = frame_bytes(1, ch, &method_payload(60, 40, &args));
    let mut h = 60u16.to_be_bytes().to_vec();
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&(body.len() as u64).to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    h.extend_from_slice(headers);
    v.extend(frame_bytes(2, ch, &h));
    v.extend(frame_bytes(3, ch, body));
    v
}

/// client-properties announcing (or not) `authentication_failure_close`.
fn client_properties(failure_close: bool) -> FieldTable {
    let mut caps = FieldTable::default();
    caps.insert(
        "authentication_failure_close".into(),
        AMQPValue::Boolean(failure_close),
    );
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    props
}

/// Protocol header, then start-ok with these client-properties and password.
async fn start_ok(port: u16, props: FieldTable, password: &str) -> Raw {
    let mut r = Raw::connect(port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.expect_method().await; // start
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: LongString::from(format!("\0guest\0{password}").into_bytes()),
            locale: "en_US".into(),
        })),
    )
    .await;
    r
}

/// A full handshake with this heartbeat, up to open-ok.
async fn open_with_heartbeat(port: u16, heartbeat: u16) -> Raw {
    let mut r = start_ok(port, FieldTable::default(), "guest").await;
    r.expect_method().await; // tune
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat,
        })),
    )
    .await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await;
    assert!(matches!(
        r.expect_method().await,
        AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))
    ));
    r
}

/// Reads raw bytes until the broker closes the socket; returns them and when it closed
/// (None if it was still open after `limit`).
async fn until_eof(r: &mut Raw, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(t.elapsed());
        match tokio::time::timeout(left, r.sock.read(&mut buf)).await {
            Err(_) => return (out, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, Some(t.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

async fn declare(r: &mut Raw, ch: u16, name: &str) {
    r.method(
        ch,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: name.into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    assert!(matches!(
        r.expect_method().await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
}

#[tokio::test]
async fn tables_and_arrays_64_deep_pass_65_are_501() {
    let b = Broker::start();
    let q = unique("depth");
    for (levels, ok) in [(64, true), (65, false)] {
        for table in [nested_table(levels), nested_arrays(levels)] {
            // in queue.declare's arguments
            let mut r = Raw::open(b.port).await;
            r.expect_method().await;
            r.open_channel(1).await;
            let args = [&[0u8, 0][..], &shortstr(q.as_bytes()), &[0u8], &table].concat();
            r.send(&frame_bytes(1, 1, &method_payload(50, 10, &args)))
                .await;
            if ok {
                assert!(matches!(
                    r.expect_method().await,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
                ));
            } else {
                let c = r.expect_close().await.expect("no close");
                assert_eq!((c.channel, c.code), (0, 501), "{levels}: {}", c.text);
            }
            // in a message's headers: delivered byte for byte at 64
            let mut r = Raw::open(b.port).await;
            r.expect_method().await;
            r.open_channel(1).await;
            declare(&mut r, 1, &q).await;
            r.send(&publish_with_headers(1, &q, &table, b"x")).await;
            if !ok {
                let c = r.expect_close().await.expect("no close");
                assert_eq!((c.channel, c.code), (0, 501), "{levels}: {}", c.text);
                continue;
            }
            r.method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                    queue: q.as_str().into(),
                    no_ack: true,
                })),
            )
            .await;
            assert!(matches!(
                r.expect_method().await,
                AMQPClass::Basic(basic::AMQPMethod::GetOk(_))
            ));
            match r.frame().await {
                Some(Frame::Header { raw_properties, .. }) => {
                    assert_eq!(&raw_properties[2..], &table[..])
                }
                other => panic!("expected the content header, got {other:?}"),
            }
        }
    }
}

/// Found by fuzzing: with the continuation bit (0x0001) set in the property flags the depth
/// check skipped the `headers` table that amq-protocol parses anyway, recursively: one
/// 126 KB content header of 18,000 nested tables overflowed a worker's stack and killed
/// the broker. Now it is 501 like any table deeper than 64, and the broker serves on.
#[tokio::test]
async fn deep_headers_behind_the_continuation_bit_are_501_and_the_broker_lives() {
    let b = Broker::start();
    let q = unique("depth-cont");
    for levels in [65, 18_000] {
        let mut r = Raw::open(b.port).await;
        r.expect_method().await;
        r.open_channel(1).await;
        declare(&mut r, 1, &q).await;
        r.send(&publish_with_flags(
            1,
            &q,
            0x2001,
            &nested_table(levels),
            b"x",
        ))
        .await;
        let c = r.expect_close().await.expect("no close");
        assert_eq!((c.channel, c.code), (0, 501), "{levels}: {}", c.text);
    }
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    r.open_channel(1).await;
    declare(&mut r, 1, &q).await;
}

#[tokio::test]
async fn a_frame_over_4096_before_tune_ok_is_501() {
    let b = Broker::start();
    // start-ok whose frame is `total` bytes, padded in client-properties
    let start_ok_frame = |total: usize| {
        let build = |pad: usize| {
            let mut props = shortstr(b"padding");
            props.push(b'S');
            props.extend_from_slice(&(pad as u32).to_be_bytes());
            props.extend(std::iter::repeat_n(b'x', pad));
            let args = [
                &(props.len() as u32).to_be_bytes()[..],
                &props,
                &shortstr(b"PLAIN"),
                &12u32.to_be_bytes(),
                b"\0guest\0guest",
                &shortstr(b"en_US"),
            ]
            .concat();
            frame_bytes(1, 0, &method_payload(10, 11, &args))
        };
        build(total - build(0).len())
    };
    // RabbitMQ accepts a payload of up to frame_max (4096) bytes: a 4104-byte frame
    let mut r = Raw::connect(b.port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.expect_method().await;
    r.send(&start_ok_frame(4104)).await;
    assert!(matches!(
        r.expect_method().await,
        AMQPClass::Connection(connection::AMQPMethod::Tune(_))
    ));
    // one byte more is refused, from the frame header
    let mut r = Raw::connect(b.port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.expect_method().await;
    r.send(&start_ok_frame(4105)[..7]).await;
    let c = r.expect_close().await.expect("no close");
    assert_eq!((c.channel, c.code, c.class_id, c.method_id), (0, 501, 0, 0));
    // after tune-ok the negotiated frame_max applies
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    r.open_channel(1).await;
    declare(&mut r, 1, &unique("big")).await;
}

#[tokio::test]
async fn non_connection_methods_on_channel_0_are_504() {
    let b = Broker::start();
    let declare = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: "x".into(),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        nowait: false,
        arguments: FieldTable::default(),
    }));
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: "x".into(),
        mandatory: false,
        immediate: false,
    }));
    let tune_ok = AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
        channel_max: 0,
        frame_max: 0,
        heartbeat: 0,
    }));
    let chan_open = AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {}));
    for (m, ids) in [
        (declare.clone(), (50, 10)),
        (publish, (60, 40)),
        (chan_open, (20, 10)),
        (tune_ok, (10, 31)),
    ] {
        let mut r = Raw::open(b.port).await;
        r.expect_method().await;
        r.method(0, m).await;
        let c = r.expect_close().await.expect("no close");
        assert_eq!(
            (c.channel, c.code, c.class_id, c.method_id),
            (0, 504, ids.0, ids.1)
        );
        assert_eq!(
            c.text,
            "CHANNEL_ERROR - unexpected method in connection state running"
        );
    }
    // after tune-ok, before connection.open
    let mut r = start_ok(b.port, FieldTable::default(), "guest").await;
    r.expect_method().await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 0,
            frame_max: 0,
            heartbeat: 0,
        })),
    )
    .await;
    r.method(0, declare).await;
    let c = r.expect_close().await.expect("no close");
    assert_eq!((c.code, c.class_id, c.method_id), (504, 50, 10));
    assert_eq!(
        c.text,
        "CHANNEL_ERROR - unexpected method in connection state opening"
    );
}

#[tokio::test]
async fn content_header_of_another_class_is_505() {
    let b = Broker::start();
    for class in [50u16, 0, 61] {
        let mut r = Raw::open(b.port).await;
        r.expect_method().await;
        r.open_channel(1).await;
        let mut v = frame_bytes(
            1,
            1,
            &method_payload(
                60,
                40,
                &[&[0u8, 0][..], &shortstr(b""), &shortstr(b"q"), &[0u8]].concat(),
            ),
        );
        let mut h = class.to_be_bytes().to_vec();
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
        v.extend(frame_bytes(2, 1, &h));
        r.send(&v).await;
        let c = r.expect_close().await.expect("no close");
        assert_eq!(
            (c.channel, c.code, c.class_id, c.method_id),
            (0, 505, 60, 40)
        );
        assert_eq!(
            c.text,
            format!("UNEXPECTED_FRAME - expected content header for class 60, got one for class {class} instead")
        );
    }
}

#[tokio::test]
async fn failed_login_is_told_only_to_clients_that_ask() {
    let b = Broker::start();
    // authentication_failure_close: connection.close 403 with class and method 0, and the
    // socket closes as soon as close-ok arrives
    let mut r = start_ok(b.port, client_properties(true), "wrong").await;
    let c = r.expect_close().await.expect("no close");
    assert_eq!((c.channel, c.code, c.class_id, c.method_id), (0, 403, 0, 0));
    assert_eq!(c.text, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.");
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
    )
    .await;
    let (rest, closed) = until_eof(&mut r, Duration::from_secs(2)).await;
    assert!(rest.is_empty() && closed.is_some(), "{rest:?} {closed:?}");
    // without it (absent or false): not a byte, the socket closes after RabbitMQ's 3 s
    for props in [FieldTable::default(), client_properties(false)] {
        let mut r = start_ok(b.port, props, "wrong").await;
        let (rest, closed) = until_eof(&mut r, Duration::from_secs(10)).await;
        assert!(rest.is_empty(), "{rest:?}");
        let closed = closed.expect("socket not closed");
        assert!(
            closed >= Duration::from_millis(2900) && closed < Duration::from_secs(6),
            "{closed:?}"
        );
    }
    // an unknown mechanism is never told, even to a client that asks
    let mut r = Raw::connect(b.port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.expect_method().await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: client_properties(true),
            mechanism: "NOPE".into(),
            response: LongString::from(&b"x"[..]),
            locale: "en_US".into(),
        })),
    )
    .await;
    let (rest, closed) = until_eof(&mut r, Duration::from_secs(10)).await;
    assert!(rest.is_empty() && closed.is_some(), "{rest:?} {closed:?}");
}

#[tokio::test]
async fn a_content_header_larger_than_the_consumers_frame_max_is_never_sent() {
    let b = Broker::start();
    let q = unique("big-headers");
    let mut big = shortstr(b"padding");
    big.push(b'S');
    big.extend_from_slice(&10_000u32.to_be_bytes());
    big.extend(std::iter::repeat_n(b'x', 10_000));
    let headers = [&(big.len() as u32).to_be_bytes()[..], &big].concat();
    let mut publisher = Raw::open(b.port).await;
    publisher.expect_method().await;
    publisher.open_channel(1).await;
    declare(&mut publisher, 1, &q).await;
    publisher
        .send(&publish_with_headers(1, &q, &headers, b"hello"))
        .await;
    // a round trip on the same channel: the publish is in the queue before anyone asks
    declare(&mut publisher, 1, &q).await;
    // a consumer that negotiated 4096: basic.get and basic.consume close the channel with
    // 406, and no content header (which would be a ~10 KB frame) is ever written
    let mut small = Raw::open_with(b.port, 2047, 4096).await;
    small.expect_method().await;
    small.open_channel(1).await;
    small.open_channel(2).await;
    let get = AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
        queue: q.as_str().into(),
        no_ack: true,
    }));
    let consume = AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
        queue: q.as_str().into(),
        consumer_tag: "c".into(),
        no_local: false,
        no_ack: false,
        exclusive: false,
        nowait: false,
        arguments: FieldTable::default(),
    }));
    let mut closes = Vec::new();
    for (ch, m) in [(1, get), (2, consume)] {
        small.method(ch, m).await;
        loop {
            match small.frame().await.expect("connection ended") {
                Frame::Method { channel, method } => {
                    if let AMQPClass::Channel(channel::AMQPMethod::Close(c)) = *method {
                        closes.push((channel, c.reply_code, c.class_id, c.method_id));
                        assert!(
                            c.reply_text.as_str().contains("exceeds the frame_max 4096"),
                            "{}",
                            c.reply_text
                        );
                        break;
                    }
                }
                Frame::Header { .. } | Frame::Body { .. } => {
                    panic!("content sent to a connection with frame_max 4096")
                }
                Frame::Heartbeat => {}
            }
        }
    }
    assert_eq!(closes, vec![(1, 406, 60, 70), (2, 406, 0, 0)]);
    // the message is still there, whole, for a connection with a larger frame_max
    publisher
        .method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: q.as_str().into(),
                no_ack: true,
            })),
        )
        .await;
    let AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)) = publisher.expect_method().await else {
        panic!("the message is gone");
    };
    assert_eq!(ok.message_count, 0);
    match publisher.frame().await {
        Some(Frame::Header { raw_properties, .. }) => {
            assert_eq!(&raw_properties[2..], &headers[..])
        }
        other => panic!("expected the content header, got {other:?}"),
    }
}

#[tokio::test]
async fn client_close_gets_close_ok_and_the_client_closes_the_socket() {
    let b = Broker::start();
    let mut r = open_with_heartbeat(b.port, 0).await;
    r.open_channel(1).await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let mut ok = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), r.sock.read_exact(&mut ok))
        .await
        .expect("no close-ok")
        .expect("socket ended before close-ok");
    assert_eq!(ok, CLOSE_OK);
    // the broker leaves the socket to the client: it is still open, and a repeated close
    // is answered with close-ok again (as RabbitMQ does)
    let (rest, closed) = until_eof(&mut r, Duration::from_millis(300)).await;
    assert!(rest.is_empty() && closed.is_none(), "{rest:?} {closed:?}");
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "again".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(5), r.sock.read_exact(&mut ok))
        .await
        .expect("no second close-ok")
        .expect("socket ended before the second close-ok");
    assert_eq!(ok, CLOSE_OK);
    // a client that never closes: the broker ends the socket after the heartbeat
    // interval (RabbitMQ: the heartbeat if shorter than its 30 s closing timeout)
    let mut r = open_with_heartbeat(b.port, 1).await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    )
    .await;
    let (bytes, closed) = until_eof(&mut r, Duration::from_secs(10)).await;
    assert!(bytes.starts_with(&CLOSE_OK), "{bytes:?}");
    let closed = closed.expect("socket never closed");
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_secs(3),
        "{closed:?}"
    );
}
