//! Durability: durable exchanges, queues, bindings and persistent messages survive a clean
//! restart and a kill -9; transient ones do not; no confirmed message is ever lost.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::time::Duration;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

async fn drain(ch: &Channel, q: &str) -> Vec<(Vec<u8>, bool)> {
    let mut out = vec![];
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push((m.delivery.data.clone(), m.delivery.redelivered));
    }
    out
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

#[tokio::test]
async fn clean_restart_keeps_durable_state_and_drops_transient() {
    let mut b = Broker::start();
    let hdr_args = args(&[
        ("x-match", AMQPValue::LongString(LongString::from("any"))),
        ("k", AMQPValue::LongString(LongString::from("v"))),
    ]);
    let q_args = args(&[("x-custom", AMQPValue::LongInt(5))]);
    {
        let (c, ch) = b.channel().await;
        for (name, kind) in [
            ("d-direct", ExchangeKind::Direct),
            ("d-fanout", ExchangeKind::Fanout),
            ("d-topic", ExchangeKind::Topic),
            ("d-headers", ExchangeKind::Headers),
        ] {
            ch.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                args(&[("x-note", AMQPValue::LongString(LongString::from(name)))]),
            )
            .await
            .unwrap();
        }
        ch.exchange_declare(
            "t-direct".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "dq".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            q_args.clone(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "dq2".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare("tq".into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            "dq".into(),
            "d-topic".into(),
            "a.#".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "dq2".into(),
            "d-headers".into(),
            "".into(),
            Default::default(),
            hdr_args.clone(),
        )
        .await
        .unwrap();
        ch.exchange_bind(
            "d-topic".into(),
            "d-fanout".into(),
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "tq".into(),
            "d-direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..4 {
            let props = persistent().with_headers(args(&[("i", AMQPValue::LongInt(i))]));
            ch.basic_publish(
                "d-topic".into(),
                "a.b".into(),
                Default::default(),
                format!("p{i}").as_bytes(),
                props,
            )
            .await
            .unwrap();
        }
        ch.basic_publish(
            "d-topic".into(),
            "a.b".into(),
            Default::default(),
            b"transient",
            BasicProperties::default(),
        )
        .await
        .unwrap();
        ch.basic_publish(
            "".into(),
            "tq".into(),
            Default::default(),
            b"in-transient-queue",
            persistent(),
        )
        .await
        .unwrap();
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        // one delivered and left unacked: it must come back redelivered
        let m = ch
            .basic_get("dq".into(), BasicGetOptions::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.delivery.data, b"p0");
        drop(m);
        c.close(200, "bye".into()).await.ok();
    }
    assert!(b.terminate().success());
    b.restart();
    let (_c, ch) = b.channel().await;
    // durable exchanges with their type and arguments: an equivalent redeclare succeeds, a
    // different one is refused
    ch.exchange_declare(
        "d-topic".into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args(&[("x-note", AMQPValue::LongString(LongString::from("d-topic")))]),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            "d-topic".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let (_c, ch) = b.channel().await;
    ch.queue_declare(
        "dq".into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        q_args,
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            "t-direct".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404), "transient exchange survived");
    let (_c, ch) = b.channel().await;
    assert_eq!(
        reply_code(&passive_queue(&ch, "tq").await.unwrap_err()),
        Some(404),
        "transient queue survived"
    );
    let (_c, ch) = b.channel().await;
    let got = drain(&ch, "dq").await;
    assert_eq!(
        got,
        vec![
            (b"p0".to_vec(), true),
            (b"p1".to_vec(), false),
            (b"p2".to_vec(), false),
            (b"p3".to_vec(), false)
        ],
        "persistent messages back in order, the delivered one redelivered, the transient one gone"
    );
    // bindings are back: topic, exchange-to-exchange, headers with arguments
    ch.basic_publish(
        "d-fanout".into(),
        "a.x".into(),
        Default::default(),
        b"via-e2e",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    ch.basic_publish(
        "d-headers".into(),
        "".into(),
        Default::default(),
        b"hdr",
        BasicProperties::default()
            .with_headers(args(&[("k", AMQPValue::LongString(LongString::from("v")))])),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(drain(&ch, "dq").await, vec![(b"via-e2e".to_vec(), false)]);
    assert_eq!(drain(&ch, "dq2").await, vec![(b"hdr".to_vec(), false)]);
}

#[tokio::test]
async fn acked_messages_stay_gone_and_deleted_queues_do_not_return() {
    let mut b = Broker::start();
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare(
            "keep".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.queue_declare(
            "doomed".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..10 {
            ch.basic_publish(
                "".into(),
                "keep".into(),
                Default::default(),
                format!("{i}").as_bytes(),
                persistent(),
            )
            .await
            .unwrap();
            ch.basic_publish(
                "".into(),
                "doomed".into(),
                Default::default(),
                b"old",
                persistent(),
            )
            .await
            .unwrap();
        }
        ch.wait_for_confirms().await.unwrap();
        for _ in 0..6 {
            let m = ch
                .basic_get("keep".into(), BasicGetOptions::default())
                .await
                .unwrap()
                .unwrap();
            m.delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        ch.queue_purge("keep".into(), Default::default())
            .await
            .unwrap();
        ch.basic_publish(
            "".into(),
            "keep".into(),
            Default::default(),
            b"after-purge",
            persistent(),
        )
        .await
        .unwrap();
        ch.queue_delete("doomed".into(), Default::default())
            .await
            .unwrap();
        ch.queue_declare(
            "doomed".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.wait_for_confirms().await.unwrap();
    }
    b.terminate();
    b.restart();
    let (_c, ch) = b.channel().await;
    assert_eq!(
        drain(&ch, "keep").await,
        vec![(b"after-purge".to_vec(), false)]
    );
    assert_eq!(
        passive_queue(&ch, "doomed").await.unwrap().message_count(),
        0,
        "a redeclared queue must not see its predecessor's messages"
    );
}

#[tokio::test]
async fn second_broker_on_the_same_data_dir_exits_with_a_clear_message() {
    let b = Broker::start();
    let out = std::process::Command::new(
        std::env::var("BROKER_BIN")
            .unwrap_or_else(|_| format!("{}/../target/debug/broker", env!("CARGO_MANIFEST_DIR"))),
    )
    .arg("--listen")
    .arg(format!("127.0.0.1:{}", free_port()))
    .arg("--data-dir")
    .arg(&b.data_dir)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another broker"), "{err}");
}

/// Publishes persistent messages with confirms until the broker is killed; returns the
/// ids confirmed and the ids sent.
async fn publish_until_killed(ch: Channel, q: String, start: u32) -> (Vec<u32>, u32) {
    let mut confirmed = vec![];
    let mut sent = start;
    'outer: loop {
        let mut batch = vec![];
        for _ in 0..50 {
            let id = sent;
            match ch
                .basic_publish(
                    "".into(),
                    q.as_str().into(),
                    Default::default(),
                    &id.to_be_bytes(),
                    persistent(),
                )
                .await
            {
                Ok(c) => batch.push((id, c)),
                Err(_) => break 'outer,
            }
            sent += 1;
        }
        for (id, c) in batch {
            match c.await {
                Ok(conf) if conf.is_ack() => confirmed.push(id),
                _ => break 'outer,
            }
        }
    }
    (confirmed, sent - start)
}

#[tokio::test]
async fn kill_9_loses_no_confirmed_message() {
    let mut b = Broker::start();
    let q = "crash-q".to_string();
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    let mut all_confirmed = std::collections::BTreeSet::new();
    let mut total_sent = 0u32;
    for round in 0..3u64 {
        let c = b.connect().await;
        let ch = c.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        // ids continue across rounds so each round's messages are distinct
        let offset = total_sent;
        let qn = q.clone();
        let task = tokio::spawn(async move { publish_until_killed(ch, qn, offset).await });
        // kill at a different moment each round
        tokio::time::sleep(Duration::from_millis(150 + 170 * round)).await;
        b.kill9();
        let (confirmed, sent) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !confirmed.is_empty(),
            "round {round}: nothing was confirmed before the kill"
        );
        all_confirmed.extend(confirmed);
        total_sent += sent;
        let _ = c;
        b.restart();
    }
    let (_c, ch) = b.channel().await;
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = vec![];
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        got.push(u32::from_be_bytes(d.data[..4].try_into().unwrap()));
    }
    let got_set: std::collections::BTreeSet<u32> = got.iter().copied().collect();
    let lost: Vec<&u32> = all_confirmed.difference(&got_set).collect();
    assert!(
        lost.is_empty(),
        "confirmed messages lost: {} of {}",
        lost.len(),
        all_confirmed.len()
    );
    assert_eq!(got_set.len(), got.len(), "duplicates after recovery");
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "publisher order not kept"
    );
    assert!(
        got.iter().all(|id| *id < total_sent),
        "a message appeared that was never published"
    );
}

/// A backlog longer than the in-memory window: bodies past it are read back from the
/// store, in order and intact, before and after a restart.
#[tokio::test]
async fn long_backlog_pages_bodies_through_the_store() {
    let mut b = Broker::start();
    let n = 10_000u32;
    let body = |i: u32| {
        let mut v = vec![(i % 251) as u8; 300];
        v[..4].copy_from_slice(&i.to_be_bytes());
        v
    };
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare(
            "backlog".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..n {
            ch.basic_publish(
                "".into(),
                "backlog".into(),
                Default::default(),
                &body(i),
                persistent(),
            )
            .await
            .unwrap();
        }
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
        // take the first half now, the rest after a restart
        let mut c = ch
            .basic_consume(
                "backlog".into(),
                "half".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for i in 0..n / 2 {
            let d = tokio::time::timeout(Duration::from_secs(10), c.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(d.data, body(i), "message {i}");
            d.ack(BasicAckOptions::default()).await.unwrap();
        }
        ch.basic_cancel("half".into(), Default::default())
            .await
            .unwrap();
    }
    b.terminate();
    b.restart();
    let (_c, ch) = b.channel().await;
    assert_eq!(
        passive_queue(&ch, "backlog").await.unwrap().message_count(),
        n / 2
    );
    let mut c = ch
        .basic_consume(
            "backlog".into(),
            "rest".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in n / 2..n {
        let d = tokio::time::timeout(Duration::from_secs(10), c.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(d.data, body(i), "message {i} after restart");
    }
}

/// A damaged record costs that one message, reported by queue at start; the broker
/// starts, and every other message of the queue is back intact.
#[tokio::test]
async fn damaged_record_is_reported_and_costs_only_that_message() {
    let mut b = Broker::start();
    let n = 50u32;
    {
        let (_c, ch) = b.channel().await;
        ch.queue_declare(
            "fragile".into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        for i in 0..n {
            let body = format!("m{i:03}-{}", "x".repeat(1000));
            ch.basic_publish(
                "".into(),
                "fragile".into(),
                Default::default(),
                body.as_bytes(),
                persistent(),
            )
            .await
            .unwrap();
        }
        assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    }
    assert!(b.terminate().success());
    // flip one byte inside the body of message 20
    let seg_dir = b.data_dir.join("segments");
    let seg = std::fs::read_dir(&seg_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .expect("a segment with records");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == b"m020")
        .expect("record of message 20");
    bytes[at + 10] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();

    let log = b.restart_logging();
    let (_c, ch) = b.channel().await;
    let got = drain(&ch, "fragile").await;
    let names: Vec<String> = got
        .iter()
        .map(|(body, _)| String::from_utf8_lossy(&body[..4]).into_owned())
        .collect();
    let expected: Vec<String> = (0..n)
        .filter(|i| *i != 20)
        .map(|i| format!("m{i:03}"))
        .collect();
    assert_eq!(names, expected, "every other message intact and in order");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("queue lost messages")
            && text.contains("queue=fragile")
            && text.contains("lost=1"),
        "the start names the queue and what it lost:\n{text}"
    );
    assert!(text.contains("damaged"), "says what is wrong:\n{text}");
}

/// A store that cannot be opened at all stops the start with a clear message instead
/// of an empty broker.
#[tokio::test]
async fn unreadable_store_stops_the_start_with_a_clear_error() {
    let mut b = Broker::start();
    assert!(b.terminate().success());
    // replace sled's database with garbage
    let store = b.data_dir.join("store");
    for entry in std::fs::read_dir(&store).unwrap().flatten() {
        let p = entry.path();
        if p.is_file() {
            std::fs::write(&p, vec![0xa5u8; 4096]).unwrap();
        }
    }
    let out = std::process::Command::new(broker_tests::broker_bin())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", broker_tests::free_port()))
        .arg("--data-dir")
        .arg(&b.data_dir)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the broker must not start on a damaged store"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("store") && err.contains(&*b.data_dir.to_string_lossy()),
        "a clear error naming the store: {err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
}
