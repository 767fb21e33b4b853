//! Bad input over raw TCP: each gets the close and reply code RabbitMQ uses (or a proper
//! close where RabbitMQ just drops the socket), promptly, and the broker keeps serving
//! everyone else.

use broker_tests::raw::{frame_bytes, method_payload, shortstr, Raw};
use broker_tests::*;
use broker_wire::protocol::{channel, connection, queue, AMQPClass};
use broker_wire::types::{FieldTable, LongString};
use std::time::Duration;

fn publish_frames(ch: u16, declared: u64) -> Vec<u8> {
    let mut v = frame_bytes(
        1,
        ch,
        &method_payload(
            60,
            40,
            &[&[0u8, 0][..], &shortstr(b""), &shortstr(b"q"), &[0u8]].concat(),
        ),
    );
    let mut h = 60u16.to_be_bytes().to_vec();
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&declared.to_be_bytes());
    h.extend_from_slice(&0u16.to_be_bytes());
    v.extend(frame_bytes(2, ch, &h));
    v
}

/// The broker still serves a fresh client normally.
async fn still_serving(b: &Broker) {
    let (_c, ch) = b.channel().await;
    let q = ch
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("broker stopped serving");
    assert!(q.name().as_str().starts_with("amq.gen-"));
}

async fn closed_with(b: &Broker, bytes: &[u8], open: bool) -> broker_tests::raw::Closed {
    let mut r = Raw::open(b.port).await;
    r.expect_method().await; // open-ok
    if open {
        r.open_channel(1).await;
    }
    r.send(bytes).await;
    r.expect_close().await.expect("no close received")
}

#[tokio::test]
async fn wrong_protocol_header_gets_ours_back() {
    let b = Broker::start();
    let mut r = Raw::connect(b.port).await;
    // 0-8 is refused (0-9, like RabbitMQ, is spoken as 0-9-1)
    r.send(b"AMQP\x01\x01\x08\x00").await;
    assert_eq!(r.read_to_end().await, b"AMQP\x00\x00\x09\x01");
    let mut r = Raw::connect(b.port).await;
    r.send(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(r.read_to_end().await, b"AMQP\x00\x00\x09\x01");
    still_serving(&b).await;
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    let b = Broker::start_with(&["--handshake-timeout-ms", "300"]);
    let mut r = Raw::connect(b.port).await;
    let t = std::time::Instant::now();
    assert!(r.read_to_end().await.is_empty());
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn oversized_frame_is_refused_from_its_header() {
    let b = Broker::start();
    // only the 7-byte header: the broker must answer without waiting for the payload
    let mut hdr = vec![1u8, 0, 1];
    hdr.extend_from_slice(&200_000u32.to_be_bytes());
    let c = closed_with(&b, &hdr, true).await;
    assert_eq!((c.channel, c.code), (0, 501));
    still_serving(&b).await;
}

#[tokio::test]
async fn too_large_message_is_refused_at_its_header_with_406() {
    let b = Broker::start_with(&["--max-message-size", "1000"]);
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    r.open_channel(1).await;
    r.open_channel(2).await;
    r.send(&publish_frames(1, 1_000_000_000)).await;
    let c = r.expect_close().await.unwrap();
    assert_eq!(
        (c.channel, c.code, c.class_id, c.method_id),
        (1, 406, 60, 40)
    );
    assert!(
        c.text.contains("larger than configured max size"),
        "{}",
        c.text
    );
    // the connection and its other channel go on
    r.method(
        2,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "".into(),
            passive: false,
            durable: false,
            exclusive: true,
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

#[tokio::test]
async fn deeply_nested_tables_are_refused_with_501_and_never_crash() {
    let b = Broker::start();
    // queue.declare arguments nested 20,000 deep (~120 KB, under frame_max)
    let args = [
        &[0u8, 0][..],
        &shortstr(b"deep"),
        &[0u8],
        &nested_table(20_000),
    ]
    .concat();
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(50, 10, &args)), true).await;
    assert_eq!(c.code, 501);
    // the same in a content header's headers property
    let mut h = 60u16.to_be_bytes().to_vec();
    h.extend_from_slice(&0u16.to_be_bytes());
    h.extend_from_slice(&1u64.to_be_bytes());
    h.extend_from_slice(&0x2000u16.to_be_bytes());
    h.extend_from_slice(&nested_table(20_000));
    let mut bytes = frame_bytes(
        1,
        1,
        &method_payload(
            60,
            40,
            &[&[0u8, 0][..], &shortstr(b""), &shortstr(b"q"), &[0u8]].concat(),
        ),
    );
    bytes.extend(frame_bytes(2, 1, &h));
    let c = closed_with(&b, &bytes, true).await;
    assert_eq!(c.code, 501);
    // 64 levels are fine
    let args = [
        &[0u8, 0][..],
        &shortstr(b"ok-depth"),
        &[0u8],
        &nested_table(64),
    ]
    .concat();
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    r.open_channel(1).await;
    r.send(&frame_bytes(1, 1, &method_payload(50, 10, &args)))
        .await;
    assert!(matches!(
        r.expect_method().await,
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_))
    ));
    still_serving(&b).await;
}

#[tokio::test]
async fn malformed_and_unknown_methods() {
    let b = Broker::start();
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(50, 10, &[0])), true).await;
    assert_eq!((c.code, c.class_id, c.method_id), (501, 50, 10));
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(60, 999, &[])), true).await;
    assert_eq!((c.code, c.class_id, c.method_id), (540, 60, 999));
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(99, 10, &[])), true).await;
    assert_eq!(c.code, 540);
    // unknown field type inside a table
    let args = [
        &[0u8, 0][..],
        &shortstr(b"q"),
        &[0u8],
        &6u32.to_be_bytes(),
        &[1, b'k', b'Z', 0, 0, 0],
    ]
    .concat();
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(50, 10, &args)), true).await;
    assert_eq!(c.code, 501);
    still_serving(&b).await;
}

#[tokio::test]
async fn framing_violations() {
    let b = Broker::start();
    let mut bad_end = frame_bytes(1, 1, &method_payload(20, 10, &[0]));
    let last = bad_end.len() - 1;
    bad_end[last] = 0;
    assert_eq!(closed_with(&b, &bad_end, true).await.code, 501);
    assert_eq!(
        closed_with(&b, &frame_bytes(9, 1, b"abc"), true).await.code,
        501
    );
    // a body longer than its header declared
    let mut v = publish_frames(1, 3);
    v.extend(frame_bytes(3, 1, b"abcdef"));
    assert_eq!(closed_with(&b, &v, true).await.code, 501);
    // an extra body frame after the content is complete
    let mut v = publish_frames(1, 3);
    v.extend(frame_bytes(3, 1, b"abc"));
    v.extend(frame_bytes(3, 1, b"x"));
    assert_eq!(closed_with(&b, &v, true).await.code, 505);
    // a content header with no publish before it
    let mut h = 60u16.to_be_bytes().to_vec();
    h.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0]);
    assert_eq!(
        closed_with(&b, &frame_bytes(2, 1, &h), true).await.code,
        505
    );
    // a method in the middle of a content sequence
    let mut v = publish_frames(1, 3);
    v.extend(frame_bytes(1, 1, &method_payload(20, 10, &[0])));
    assert_eq!(closed_with(&b, &v, true).await.code, 505);
    // heartbeat on a channel, content on channel 0
    assert_eq!(
        closed_with(&b, &frame_bytes(8, 1, b""), true).await.code,
        505
    );
    assert_eq!(
        closed_with(&b, &frame_bytes(2, 0, &h), true).await.code,
        505
    );
    still_serving(&b).await;
}

#[tokio::test]
async fn channel_misuse() {
    let b = Broker::start();
    // a frame on a channel that is not open
    let c = closed_with(
        &b,
        &frame_bytes(
            1,
            5,
            &method_payload(
                50,
                10,
                &[&[0u8, 0][..], &shortstr(b"x"), &[0u8], &0u32.to_be_bytes()].concat(),
            ),
        ),
        false,
    )
    .await;
    assert_eq!((c.code, c.class_id, c.method_id), (504, 50, 10));
    // a channel number above the negotiated channel_max
    let mut r = Raw::open_with(b.port, 10, 131_072).await;
    r.expect_method().await;
    r.method(
        11,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    assert_eq!(r.expect_close().await.unwrap().code, 504);
    // channel.open twice
    let c = closed_with(&b, &frame_bytes(1, 1, &method_payload(20, 10, &[0])), true).await;
    assert_eq!((c.code, c.class_id, c.method_id), (504, 20, 10));
    // a server-only method sent by the client
    let deliver = [
        &shortstr(b"t")[..],
        &1u64.to_be_bytes(),
        &[0],
        &shortstr(b""),
        &shortstr(b""),
    ]
    .concat();
    let c = closed_with(
        &b,
        &frame_bytes(1, 1, &method_payload(60, 60, &deliver)),
        true,
    )
    .await;
    assert_eq!(c.code, 503);
    still_serving(&b).await;
}

#[tokio::test]
async fn tune_ok_above_the_offer_is_530() {
    let b = Broker::start();
    let mut r = Raw::open_with(b.port, 2047, 1 << 20).await;
    let c = r.expect_close().await.unwrap();
    assert_eq!((c.code, c.class_id, c.method_id), (530, 10, 31));
    let mut r = Raw::open_with(b.port, 5000, 131_072).await;
    assert_eq!(r.expect_close().await.unwrap().code, 530);
    let mut r = Raw::open_with(b.port, 2047, 1000).await;
    assert_eq!(r.expect_close().await.unwrap().code, 530);
    still_serving(&b).await;
}

#[tokio::test]
async fn wrong_password_and_unknown_vhost() {
    let b = Broker::start();
    let bad = format!("amqp://guest:nope@127.0.0.1:{}/%2f", b.port);
    let err = lapin::Connection::connect(&bad, lapin::ConnectionProperties::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403), "{err:?}");
    let unknown = format!("amqp://guest:guest@127.0.0.1:{}/nope", b.port);
    let err = lapin::Connection::connect(&unknown, lapin::ConnectionProperties::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(530), "{err:?}");
}

#[tokio::test]
async fn amqplain_login_and_start_capabilities() {
    let b = Broker::start();
    let mut r = Raw::connect(b.port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    let AMQPClass::Connection(connection::AMQPMethod::Start(start)) = r.expect_method().await
    else {
        panic!("no start")
    };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let mechs = String::from_utf8_lossy(start.mechanisms.as_bytes()).to_string();
    assert!(mechs.contains("PLAIN") && mechs.contains("AMQPLAIN"));
    let Some(broker_wire::types::AMQPValue::FieldTable(caps)) =
        start.server_properties.inner().get("capabilities")
    else {
        panic!("no capabilities")
    };
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
        "consumer_priorities",
    ] {
        assert_eq!(
            caps.inner().get(c),
            Some(&broker_wire::types::AMQPValue::Boolean(true)),
            "{c}"
        );
    }
    // AMQPLAIN: a field table without its length prefix
    let mut resp = vec![5u8];
    resp.extend_from_slice(b"LOGIN");
    resp.push(b'S');
    resp.extend_from_slice(&5u32.to_be_bytes());
    resp.extend_from_slice(b"guest");
    resp.push(8);
    resp.extend_from_slice(b"PASSWORD");
    resp.push(b'S');
    resp.extend_from_slice(&5u32.to_be_bytes());
    resp.extend_from_slice(b"guest");
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "AMQPLAIN".into(),
            response: LongString::from(resp),
            locale: "en_US".into(),
        })),
    )
    .await;
    let AMQPClass::Connection(connection::AMQPMethod::Tune(t)) = r.expect_method().await else {
        panic!("no tune")
    };
    assert_eq!(
        (t.channel_max, t.frame_max, t.heartbeat),
        (2047, 131_072, 60)
    );
}

#[tokio::test]
async fn heartbeats_flow_and_silence_closes() {
    let b = Broker::start();
    let mut r = Raw::connect(b.port).await;
    r.send(b"AMQP\x00\x00\x09\x01").await;
    r.expect_method().await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: LongString::from(&b"\0guest\0guest"[..]),
            locale: "en_US".into(),
        })),
    )
    .await;
    r.expect_method().await;
    r.method(
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 10,
            frame_max: 131_072,
            heartbeat: 1,
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
    r.expect_method().await;
    // the broker sends heartbeats while we are silent...
    let f = r.frame().await.expect("no heartbeat from broker");
    assert!(matches!(f, broker_wire::Frame::Heartbeat));
    // ...and closes the socket after two missed intervals
    let t = std::time::Instant::now();
    loop {
        if r.frame().await.is_none() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "connection not closed after missed heartbeats"
        );
    }
}
