//! Queue, exchange and consumer arguments driven with lapin: TTL and dead-lettering with
//! the x-death header, length limits with reject-publish nacks, priorities, the delivery
//! limit, amq.dead-letter, and durable dead letters across a restart. (The pika suite in
//! tests/python covers every argument and reason in detail, checked against RabbitMQ.)

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use std::time::Duration;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

async fn declare(ch: &Channel, q: &str, durable: bool, a: FieldTable) {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        a,
    )
    .await
    .unwrap();
}

async fn publish(ch: &Channel, q: &str, body: &[u8], props: BasicProperties) {
    ch.basic_publish("".into(), q.into(), Default::default(), body, props)
        .await
        .unwrap();
}

/// Gets one message, waiting up to 3 s for it to arrive.
async fn get(ch: &Channel, q: &str) -> Option<lapin::message::BasicGetMessage> {
    for _ in 0..60 {
        if let Some(m) = ch
            .basic_get(q.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            return Some(m);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

fn header<'a>(m: &'a lapin::message::BasicGetMessage, k: &str) -> Option<&'a AMQPValue> {
    m.delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(k))
}

fn x_death(m: &lapin::message::BasicGetMessage) -> Vec<FieldTable> {
    match header(m, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .filter_map(|v| match v {
                AMQPValue::FieldTable(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn expired_message_is_dead_lettered_with_x_death_while_no_consumer_is_attached() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let (q, dlq) = (unique("ttl"), unique("dlq"));
    declare(&ch, &dlq, false, FieldTable::default()).await;
    declare(
        &ch,
        &q,
        false,
        args(&[
            ("x-message-ttl", AMQPValue::LongInt(100)),
            ("x-dead-letter-exchange", s("")),
            ("x-dead-letter-routing-key", s(&dlq)),
        ]),
    )
    .await;
    publish(
        &ch,
        &q,
        b"late",
        BasicProperties::default().with_expiration("5000".into()),
    )
    .await;
    let m = get(&ch, &dlq).await.expect("dead letter arrives");
    assert_eq!(m.delivery.data, b"late");
    assert_eq!(m.delivery.routing_key.as_str(), dlq);
    assert!(m.delivery.properties.expiration().is_none());
    let xd = x_death(&m);
    assert_eq!(xd.len(), 1);
    let d = xd[0].inner();
    assert_eq!(d.get("reason"), Some(&s("expired")));
    assert_eq!(d.get("queue"), Some(&s(&q)));
    assert_eq!(d.get("exchange"), Some(&s("")));
    assert_eq!(d.get("count"), Some(&AMQPValue::LongLongInt(1)));
    assert_eq!(d.get("original-expiration"), Some(&s("5000")));
    assert!(matches!(d.get("time"), Some(AMQPValue::Timestamp(_))));
    assert_eq!(header(&m, "x-first-death-reason"), Some(&s("expired")));
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn reject_publish_nacks_the_publisher_and_keeps_the_first_messages() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("full");
    declare(
        &ch,
        &q,
        false,
        args(&[
            ("x-max-length", AMQPValue::LongInt(2)),
            ("x-overflow", s("reject-publish")),
        ]),
    )
    .await;
    ch.confirm_select(Default::default()).await.unwrap();
    let mut acks = vec![];
    for body in [b"1", b"2", b"3"] {
        let confirm = ch
            .basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        acks.push(confirm.is_ack());
    }
    assert_eq!(acks, vec![true, true, false]);
    assert_eq!(get(&ch, &q).await.unwrap().delivery.data, b"1");
    assert_eq!(get(&ch, &q).await.unwrap().delivery.data, b"2");
}

#[tokio::test]
async fn priorities_go_first() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("prio");
    declare(
        &ch,
        &q,
        false,
        args(&[("x-max-priority", AMQPValue::ShortShortUInt(10))]),
    )
    .await;
    for (body, p) in [(b"low", 1u8), (b"top", 9), (b"mid", 5)] {
        publish(&ch, &q, body, BasicProperties::default().with_priority(p)).await;
    }
    let mut order = vec![];
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        order.push(m.delivery.data.clone());
    }
    assert_eq!(
        order,
        vec![b"top".to_vec(), b"mid".to_vec(), b"low".to_vec()]
    );
}

/// A poison message stops looping: after x-delivery-limit returns it goes to
/// amq.dead-letter (the queue names no dead-letter exchange of its own).
#[tokio::test]
async fn delivery_limit_sends_a_poison_message_to_amq_dead_letter() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let (q, dlq) = (unique("poison"), unique("all-dead"));
    declare(&ch, &dlq, false, FieldTable::default()).await;
    ch.queue_bind(
        dlq.as_str().into(),
        "amq.dead-letter".into(),
        "#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare(
        &ch,
        &q,
        false,
        args(&[("x-delivery-limit", AMQPValue::LongInt(1))]),
    )
    .await;
    publish(&ch, &q, b"poison", BasicProperties::default()).await;
    for expected_count in [None, Some(AMQPValue::LongLongInt(1))] {
        let m = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()
            .expect("delivered");
        assert_eq!(header(&m, "x-delivery-count").cloned(), expected_count);
        m.delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let m = get(&ch, &dlq).await.expect("dead-lettered after the limit");
    assert_eq!(m.delivery.exchange.as_str(), "amq.dead-letter");
    assert_eq!(m.delivery.routing_key.as_str(), q);
    assert_eq!(
        x_death(&m)[0].inner().get("reason"),
        Some(&s("delivery_limit"))
    );
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .is_none());
}

/// Persistent messages that expire in a durable queue land in a durable DLQ, and both
/// the dead letters and the messages still waiting survive a restart.
#[tokio::test]
async fn durable_dead_letters_survive_a_restart() {
    let mut b = Broker::start();
    let (q, dlq) = (unique("d-ttl"), unique("d-dlq"));
    {
        let (_c, ch) = b.channel().await;
        declare(&ch, &dlq, true, FieldTable::default()).await;
        declare(
            &ch,
            &q,
            true,
            args(&[
                ("x-dead-letter-exchange", s("")),
                ("x-dead-letter-routing-key", s(&dlq)),
            ]),
        )
        .await;
        ch.confirm_select(Default::default()).await.unwrap();
        let persistent = BasicProperties::default().with_delivery_mode(2);
        publish(
            &ch,
            &q,
            b"dies-now",
            persistent.clone().with_expiration("50".into()),
        )
        .await;
        publish(
            &ch,
            &q,
            b"dies-later",
            persistent.with_expiration("1500".into()),
        )
        .await;
        ch.wait_for_confirms().await.unwrap();
        // the first expires (at the head) and is dead-lettered before the restart
        let mut moved = false;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n = ready_count(&ch, dlq.as_str()).await;
            if n == 1 {
                moved = true;
                break;
            }
        }
        assert!(moved, "first message dead-lettered");
    }
    assert!(b.terminate().success());
    b.restart();
    let (_c, ch) = b.channel().await;
    // the second expires after the restart: its TTL counts from its arrival
    let first = get(&ch, &dlq)
        .await
        .expect("dead letter kept across the restart");
    assert_eq!(first.delivery.data, b"dies-now");
    let second = get(&ch, &dlq).await.expect("expired after the restart");
    assert_eq!(second.delivery.data, b"dies-later");
    assert_eq!(
        x_death(&second)[0].inner().get("reason"),
        Some(&s("expired"))
    );
    assert_eq!(second.delivery.properties.delivery_mode(), &Some(2));
}

#[tokio::test]
async fn invalid_arguments_are_refused_with_406() {
    let b = Broker::start();
    let (c, ch) = b.channel().await;
    let q = unique("bad");
    let err = ch
        .queue_declare(
            q.as_str().into(),
            Default::default(),
            args(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err),
        format!("PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '{q}' in vhost '/': {{value_negative,-1}}")
    );
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            q.as_str().into(),
            Default::default(),
            args(&[("x-overflow", s("sideways"))]),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert!(reply_text(&err).ends_with("invalid_overflow"));
}
