//! Quorum queues on one node (issue 16): a publish is confirmed only once its entry is
//! fsynced in the queue's Raft log, so a kill -9 loses no confirmed message; deliveries
//! unacked at a crash come back redelivered; delivery counts survive the restart.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use std::collections::BTreeSet;
use std::time::Duration;

fn quorum() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
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
        quorum(),
    )
    .await
    .unwrap();
}

/// Publishes with confirms until the broker is killed; returns the ids confirmed.
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
                    BasicProperties::default().with_delivery_mode(2),
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

/// Every message in the queue, by basic.get without ack.
async fn drain(ch: &Channel, q: &str) -> Vec<u32> {
    let mut out = vec![];
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap()));
    }
    out
}

#[tokio::test]
async fn kill_9_loses_no_confirmed_message() {
    let mut b = Broker::start();
    let q = "qq-crash".to_string();
    {
        let (_c, ch) = b.channel().await;
        declare(&ch, &q).await;
    }
    let mut all_confirmed = BTreeSet::new();
    let mut total_sent = 0u32;
    for round in 0..3u64 {
        let c = b.connect().await;
        let ch = c.create_channel().await.unwrap();
        ch.confirm_select(Default::default()).await.unwrap();
        let task = tokio::spawn(publish_until_killed(ch, q.clone(), total_sent));
        tokio::time::sleep(Duration::from_millis(200 + 170 * round)).await;
        b.kill9();
        let (confirmed, sent) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(!confirmed.is_empty(), "round {round}: nothing confirmed");
        all_confirmed.extend(confirmed);
        total_sent += sent;
        drop(c);
        b.restart();
    }
    let (_c, ch) = b.channel().await;
    let got = drain(&ch, &q).await;
    let got_set: BTreeSet<u32> = got.iter().copied().collect();
    assert_eq!(got.len(), got_set.len(), "no message twice");
    let lost: Vec<&u32> = all_confirmed.difference(&got_set).collect();
    assert!(lost.is_empty(), "confirmed messages lost: {lost:?}");
    assert!(got_set.iter().all(|id| *id < total_sent));
}

#[tokio::test]
async fn unacked_deliveries_come_back_redelivered_with_their_count() {
    let mut b = Broker::start();
    let q = "qq-unacked";
    {
        let (_c, ch) = b.channel().await;
        declare(&ch, q).await;
        ch.confirm_select(Default::default()).await.unwrap();
        for id in 0u32..3 {
            let c = ch
                .basic_publish(
                    "".into(),
                    q.into(),
                    Default::default(),
                    &id.to_be_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
            assert!(c.await.unwrap().is_ack());
        }
        // message 0 comes back once: its delivery count is 1 from then on
        let m = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .unwrap();
        ch.basic_nack(
            m.delivery.delivery_tag,
            BasicNackOptions {
                requeue: true,
                multiple: false,
            },
        )
        .await
        .unwrap();
        // a consumer holds all three, unacked, when the broker dies
        let mut consumer = ch
            .basic_consume(
                q.into(),
                "c".into(),
                Default::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        for _ in 0..3 {
            tokio::time::timeout(Duration::from_secs(5), consumer.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        // the deliveries' checkout is applied before the kill (an entry after it)
        assert_eq!(ready_count(&ch, q).await, 0);
        b.kill9();
    }
    b.restart();
    let (_c, ch) = b.channel().await;
    let mut got = vec![];
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let count = m
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count").cloned());
        let id = u32::from_be_bytes(m.delivery.data[..4].try_into().unwrap());
        got.push((id, m.delivery.redelivered, count));
    }
    let ids: BTreeSet<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]), "{got:?}");
    assert!(got.iter().all(|g| g.1), "all redelivered: {got:?}");
    let zero = got.iter().find(|g| g.0 == 0).and_then(|g| g.2.clone());
    assert!(
        matches!(zero, Some(AMQPValue::LongLongInt(n)) if n >= 1),
        "message 0 keeps its delivery count: {zero:?}"
    );
}
