//! The `x-delayed-message` exchange through lapin: a message with `x-delay` waits that
//! long, then routes by the `x-delayed-type`'s rules with `x-delay` negated; one
//! without routes at once; a missing `x-delayed-type` is refused with the plugin's 406.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, ExchangeKind};
use std::time::{Duration, Instant};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

#[tokio::test]
async fn a_delayed_message_arrives_after_its_delay_with_it_negated() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let x = unique("delayed");
    let args = table(&[(
        "x-delayed-type",
        AMQPValue::LongString(LongString::from("fanout")),
    )]);
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Custom("x-delayed-message".into()),
        ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    let q = unique("q");
    ch.queue_declare(q.as_str().into(), Default::default(), Default::default())
        .await
        .unwrap();
    ch.queue_bind(
        q.as_str().into(),
        x.as_str().into(),
        "".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    for (body, delay) in [("later", Some(500)), ("now", None)] {
        let headers = match delay {
            Some(ms) => table(&[("x-delay", AMQPValue::LongInt(ms))]),
            None => FieldTable::default(),
        };
        let confirm = ch
            .basic_publish(
                x.as_str().into(),
                "any".into(),
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack());
    }
    let mut got = vec![];
    while got.len() < 2 && start.elapsed() < Duration::from_secs(10) {
        match ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => got.push((start.elapsed(), m)),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let bodies: Vec<_> = got
        .iter()
        .map(|(_, m)| String::from_utf8(m.delivery.data.clone()).unwrap())
        .collect();
    assert_eq!(bodies, ["now", "later"]);
    assert!(got[1].0 >= Duration::from_millis(490), "{:?}", got[1].0);
    let headers = got[1].1.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        headers.inner().get("x-delay"),
        Some(&AMQPValue::LongLongInt(-500))
    );

    // without x-delayed-type: the plugin's 406
    let (_c2, ch2) = b.channel().await;
    let e = ch2
        .exchange_declare(
            unique("bad").as_str().into(),
            ExchangeKind::Custom("x-delayed-message".into()),
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    let text = format!("{e}");
    assert!(
        text.contains("'x-delayed-type' must be an existing exchange type"),
        "{text}"
    );
}
