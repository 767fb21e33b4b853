//! Delayed retry through lapin (issue 18): a nacked message waits out its back-off
//! (`x-delayed-retry-*`) before it comes back, with its delivery count, while the
//! queue's other messages flow.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use std::time::{Duration, Instant};

fn retry_args(queue_type: &str, min_ms: i64) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from(queue_type)),
    );
    t.insert(
        ShortString::from("x-delayed-retry-type"),
        AMQPValue::LongString(LongString::from("all")),
    );
    t.insert(
        ShortString::from("x-delayed-retry-min"),
        AMQPValue::LongLongInt(min_ms),
    );
    t
}

async fn next(c: &mut lapin::Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(10), c.next())
        .await
        .expect("a delivery in time")
        .expect("consumer open")
        .expect("a delivery")
}

async fn nacked_message_waits(queue_type: &str) {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("retry-lapin");
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(q.as_str().into(), durable, retry_args(queue_type, 250))
        .await
        .unwrap();
    for body in [&b"first"[..], b"second"] {
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            Default::default(),
            body,
            BasicProperties::default(),
        )
        .await
        .unwrap();
    }
    ch.basic_qos(1, Default::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            Default::default(),
            Default::default(),
        )
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.data, b"first");
    let nacked_at = Instant::now();
    first
        .nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // the other message is not held up by the waiting one
    let second = next(&mut consumer).await;
    assert_eq!(second.data, b"second");
    assert!(nacked_at.elapsed() < Duration::from_millis(250));
    second.ack(Default::default()).await.unwrap();
    let again = next(&mut consumer).await;
    assert!(
        nacked_at.elapsed() >= Duration::from_millis(248),
        "{:?}",
        nacked_at.elapsed()
    );
    assert_eq!(again.data, b"first");
    assert!(again.redelivered);
    let count = again
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    assert!(
        matches!(
            count,
            Some(AMQPValue::LongLongInt(1) | AMQPValue::LongInt(1))
        ),
        "{count:?}"
    );
}

#[tokio::test]
async fn classic_queue_nack_waits_out_the_back_off() {
    nacked_message_waits("classic").await;
}

#[tokio::test]
async fn quorum_queue_nack_waits_out_the_back_off() {
    nacked_message_waits("quorum").await;
}
