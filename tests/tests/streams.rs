//! Streams (`x-queue-type: stream`) through lapin: confirmed publishing, consumers
//! reading from `first`, `next` and an offset with their `x-stream-offset` headers,
//! acks as credit, and everything confirmed still there after kill -9.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};
use std::time::Duration;

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("stream")),
    );
    t
}

async fn declare(ch: &Channel, q: &str) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        stream_args(),
    )
    .await
    .unwrap();
}

async fn publish_confirmed(ch: &Channel, q: &str, bodies: impl Iterator<Item = String>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for b in bodies {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
}

async fn reader(ch: &Channel, q: &str, offset: AMQPValue, prefetch: u16) -> Consumer {
    ch.basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), offset);
    ch.basic_consume(
        q.into(),
        unique("reader").as_str().into(),
        BasicConsumeOptions::default(),
        args,
    )
    .await
    .unwrap()
}

/// The next delivery's offset header and body (acked: acks are the reader's credit).
async fn next(c: &mut Consumer) -> (i64, String) {
    let d = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("delivery timed out")
        .expect("consumer ended")
        .expect("delivery error");
    let offset = match d
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-stream-offset").cloned())
    {
        Some(AMQPValue::LongLongInt(o)) => o,
        other => panic!("x-stream-offset header: {other:?}"),
    };
    d.ack(BasicAckOptions::default()).await.unwrap();
    (offset, String::from_utf8_lossy(&d.data).into_owned())
}

fn first() -> AMQPValue {
    AMQPValue::LongString(LongString::from("first"))
}

#[tokio::test]
async fn readers_replay_from_first_at_an_offset_and_from_next() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("stream");
    declare(&ch, &q).await;
    publish_confirmed(&ch, &q, (0..20).map(|i| format!("m{i}"))).await;
    // prefetch 5 with acks: all 20 arrive, in order, at offsets 0..19
    let (_c2, ch2) = b.channel().await;
    let mut all = reader(&ch2, &q, first(), 5).await;
    for i in 0..20 {
        assert_eq!(next(&mut all).await, (i, format!("m{i}")));
    }
    // a second reader from offset 15 reads the same messages independently
    let (_c3, ch3) = b.channel().await;
    let mut tail = reader(&ch3, &q, AMQPValue::LongLongInt(15), 5).await;
    for i in 15..20 {
        assert_eq!(next(&mut tail).await, (i, format!("m{i}")));
    }
    // next: only what is published after it attached
    let (_c4, ch4) = b.channel().await;
    let mut new = reader(&ch4, &q, AMQPValue::LongString(LongString::from("next")), 5).await;
    publish_confirmed(&ch, &q, std::iter::once("late".to_string())).await;
    assert_eq!(next(&mut new).await, (20, "late".to_string()));
    assert_eq!(next(&mut all).await, (20, "late".to_string()));
}

#[tokio::test]
async fn confirmed_messages_survive_kill_9() {
    let mut b = Broker::start();
    let q = unique("stream");
    {
        let (_c, ch) = b.channel().await;
        declare(&ch, &q).await;
        publish_confirmed(&ch, &q, (0..50).map(|i| format!("m{i}"))).await;
    }
    b.kill9();
    b.restart();
    let (_c, ch) = b.channel().await;
    let mut r = reader(&ch, &q, first(), 10).await;
    for i in 0..50 {
        assert_eq!(next(&mut r).await, (i, format!("m{i}")));
    }
    let (_c2, ch2) = b.channel().await;
    publish_confirmed(&ch2, &q, std::iter::once("after".to_string())).await;
    assert_eq!(next(&mut r).await, (50, "after".to_string()));
}
