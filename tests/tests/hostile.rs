//! Input meant to hurt the broker costs the sender little and everyone else nothing.

use broker_tests::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use std::time::{Duration, Instant};

/// The reproduced attack: a topic binding of `#.#.#.#.#.#` and one publish with a
/// 101-word routing key took the broker's RSS past 2.4 GB and kept a worker busy. Now
/// the publish is routed (and confirmed) at once, and another connection's round trips
/// are not held up meanwhile.
#[tokio::test]
async fn hash_heavy_topic_binding_and_a_long_key_cost_nothing() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("hostile-topic");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = unique("hostile-q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    for key in [
        "#.#.#.#.#.#",
        "#.a.#.a.#.a.#.a.#.a.#.b",
        "*.#.*.#.*.#.*.#.*",
    ] {
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let (_c2, other) = b.channel().await;
    let key = format!("{}a", "a.".repeat(100));
    let start = Instant::now();
    for _ in 0..20 {
        let confirm = ch
            .basic_publish(
                x.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .unwrap();
        // another client is served meanwhile
        ready_count(&other, &q).await;
        assert!(confirm.await.unwrap().is_ack());
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "20 publishes took {:?}",
        start.elapsed()
    );
    assert_eq!(ready_count(&other, &q).await, 20, "each routed once");
}
