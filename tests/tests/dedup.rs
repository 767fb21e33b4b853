//! Message deduplication through lapin: an exchange with LavinMQ's
//! `x-message-deduplication` routes a key once; a duplicate is acked in confirm mode
//! and returned (312 NO_ROUTE) when mandatory; messages without the header pass.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

/// Publishes with mandatory in confirm mode; returns whether it was routed (a
/// duplicate comes back with basic.return). Every publish is acked.
async fn routed(ch: &Channel, x: &str, key: Option<&str>, body: &str) -> bool {
    let headers = match key {
        Some(k) => table(&[(
            "x-deduplication-header",
            AMQPValue::LongString(LongString::from(k)),
        )]),
        None => FieldTable::default(),
    };
    let confirm = ch
        .basic_publish(
            x.into(),
            "rk".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body.as_bytes(),
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "a duplicate is acked like any publish");
    match confirm.take_message() {
        Some(r) => {
            assert_eq!(r.reply_code, 312);
            assert_eq!(r.reply_text.as_str(), "NO_ROUTE");
            false
        }
        None => true,
    }
}

#[tokio::test]
async fn exchange_deduplication_routes_a_key_once() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let x = unique("dx");
    let args = table(&[
        ("x-message-deduplication", AMQPValue::Boolean(true)),
        ("x-cache-size", AMQPValue::LongInt(10)),
    ]);
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
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
        "rk".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(routed(&ch, &x, Some("a"), "1").await);
    assert!(!routed(&ch, &x, Some("a"), "2").await);
    assert!(routed(&ch, &x, Some("b"), "3").await);
    assert!(routed(&ch, &x, None, "4").await);
    assert!(routed(&ch, &x, None, "5").await);
    let mut got = vec![];
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(got, ["1", "3", "4", "5"]);

    // a bad argument is refused with 406 and a text naming it
    let (_c2, ch2) = b.channel().await;
    let bad = table(&[
        ("x-message-deduplication", AMQPValue::Boolean(true)),
        ("x-cache-size", AMQPValue::LongInt(-1)),
    ]);
    let e = ch2
        .exchange_declare(
            unique("bad").as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            bad,
        )
        .await
        .unwrap_err();
    let text = format!("{e}");
    assert!(
        text.contains("x-cache-size") && text.contains("value_negative"),
        "{text}"
    );
}
