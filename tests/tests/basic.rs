//! basic.* through lapin: consume, round robin, prefetch, ack/nack/reject, requeue with
//! redelivered, recover, get, mandatory returns, cancel notifications, properties and
//! large bodies.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::{
    AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString,
};
use lapin::{BasicProperties, Channel, Consumer};
use std::time::Duration;

async fn queue(ch: &Channel) -> String {
    let q = unique("q");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    q
}

async fn publish(ch: &Channel, q: &str, body: &[u8]) {
    ch.basic_publish(
        "".into(),
        q.into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

async fn next(c: &mut Consumer) -> lapin::message::Delivery {
    tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("delivery timed out")
        .expect("consumer ended")
        .expect("delivery error")
}

async fn nothing_within(c: &mut Consumer, ms: u64) -> bool {
    tokio::time::timeout(Duration::from_millis(ms), c.next())
        .await
        .is_err()
}

#[tokio::test]
async fn consume_round_robin_between_consumers() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c1 = ch
        .basic_consume(
            q.as_str().into(),
            "c1".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut c2 = ch
        .basic_consume(
            q.as_str().into(),
            "c2".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..6 {
        publish(&ch, &q, format!("{i}").as_bytes()).await;
    }
    let mut a = vec![];
    let mut bb = vec![];
    for _ in 0..3 {
        a.push(String::from_utf8(next(&mut c1).await.data).unwrap());
        bb.push(String::from_utf8(next(&mut c2).await.data).unwrap());
    }
    assert_eq!(a, vec!["0", "2", "4"]);
    assert_eq!(bb, vec!["1", "3", "5"]);
}

#[tokio::test]
async fn server_generated_consumer_tag_and_delivery_fields() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(c.tag().as_str().starts_with("amq.ctag-"), "{}", c.tag());
    publish(&ch, &q, b"x").await;
    let d = next(&mut c).await;
    assert_eq!(d.delivery_tag, 1);
    assert!(!d.redelivered);
    assert_eq!(d.exchange.as_str(), "");
    assert_eq!(d.routing_key.as_str(), q);
    d.ack(BasicAckOptions::default()).await.unwrap();
}

#[tokio::test]
async fn prefetch_limits_unacked_per_consumer() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    ch.basic_qos(2, BasicQosOptions::default()).await.unwrap();
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..5 {
        publish(&ch, &q, format!("{i}").as_bytes()).await;
    }
    let d1 = next(&mut c).await;
    let _d2 = next(&mut c).await;
    assert!(nothing_within(&mut c, 300).await, "prefetch 2 exceeded");
    d1.ack(BasicAckOptions::default()).await.unwrap();
    let d3 = next(&mut c).await;
    assert_eq!(d3.data, b"2");
}

#[tokio::test]
async fn global_prefetch_is_shared_by_the_channel() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let (q1, q2) = (queue(&ch).await, queue(&ch).await);
    ch.basic_qos(1, BasicQosOptions { global: true })
        .await
        .unwrap();
    let mut c1 = ch
        .basic_consume(
            q1.as_str().into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut c2 = ch
        .basic_consume(
            q2.as_str().into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, &q1, b"a").await;
    let d = next(&mut c1).await;
    publish(&ch, &q2, b"b").await;
    assert!(
        nothing_within(&mut c2, 300).await,
        "global prefetch 1 exceeded"
    );
    d.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(next(&mut c2).await.data, b"b");
}

#[tokio::test]
async fn nack_and_reject_requeue_or_drop() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, &q, b"one").await;
    let d = next(&mut c).await;
    d.nack(BasicNackOptions {
        requeue: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.data, b"one");
    assert!(d.redelivered, "requeued message must carry redelivered");
    d.reject(BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    assert!(nothing_within(&mut c, 300).await);
    let n = passive_queue(&ch, q.as_str()).await.unwrap();
    assert_eq!(n.message_count(), 0);
}

#[tokio::test]
async fn ack_multiple_settles_earlier_tags() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..3 {
        publish(&ch, &q, format!("{i}").as_bytes()).await;
    }
    let mut last = None;
    for _ in 0..3 {
        last = Some(next(&mut c).await);
    }
    last.unwrap()
        .ack(BasicAckOptions { multiple: true })
        .await
        .unwrap();
    // nack multiple on a fresh batch requeues all of them
    for i in 3..5 {
        publish(&ch, &q, format!("{i}").as_bytes()).await;
    }
    let _a = next(&mut c).await;
    let b2 = next(&mut c).await;
    b2.nack(BasicNackOptions {
        multiple: true,
        requeue: true,
    })
    .await
    .unwrap();
    let r1 = next(&mut c).await;
    let r2 = next(&mut c).await;
    assert_eq!((r1.data.as_slice(), r1.redelivered), (&b"3"[..], true));
    assert_eq!((r2.data.as_slice(), r2.redelivered), (&b"4"[..], true));
    r2.ack(BasicAckOptions { multiple: true }).await.unwrap();
    let st = passive_queue(&ch, q.as_str()).await.unwrap();
    assert_eq!(st.message_count(), 0);
}

#[tokio::test]
async fn unacked_messages_return_when_channel_closes() {
    let b = Broker::start();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    let q = queue(&ch).await;
    for i in 0..3 {
        publish(&ch, &q, format!("{i}").as_bytes()).await;
    }
    let ch2 = c.create_channel().await.unwrap();
    let mut cons = ch2
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..3 {
        next(&mut cons).await;
    }
    ch2.close(200, "bye".into()).await.unwrap();
    let mut got = vec![];
    for _ in 0..50 {
        if let Some(m) = ch
            .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            got.push((
                String::from_utf8(m.delivery.data.clone()).unwrap(),
                m.delivery.redelivered,
            ));
            if got.len() == 3 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        got,
        vec![("0".into(), true), ("1".into(), true), ("2".into(), true)]
    );
}

#[tokio::test]
async fn recover_requeues_unacked() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    publish(&ch, &q, b"r").await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert!(!d.redelivered);
    ch.basic_recover(BasicRecoverOptions { requeue: true })
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert!(d.redelivered);
    assert_eq!(d.data, b"r");
}

#[tokio::test]
async fn basic_get_and_get_empty() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    assert!(ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .is_none());
    publish(&ch, &q, b"a").await;
    publish(&ch, &q, b"b").await;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"a");
    assert_eq!(m.message_count, 1);
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.message_count, 0);
    m.delivery
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert!(m.delivery.redelivered);
    assert_eq!(m.delivery.data, b"b");
}

#[tokio::test]
async fn mandatory_unroutable_is_returned_with_312() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = ch
        .basic_publish(
            "".into(),
            "nowhere".into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "RabbitMQ acks a returned message");
    let returned = confirm.take_message().expect("basic.return");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.data, b"lost");
}

#[tokio::test]
async fn consumer_of_deleted_queue_gets_cancel() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, ch2) = b.channel().await;
    ch2.queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();
    // lapin ends the consumer stream when the server cancels it
    let end = tokio::time::timeout(Duration::from_secs(5), c.next())
        .await
        .expect("no basic.cancel");
    assert!(end.is_none(), "expected the consumer to end, got {end:?}");
    assert!(ch.status().connected(), "the channel stays open");
}

#[tokio::test]
async fn cancel_stops_deliveries() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    publish(&ch, &q, b"1").await;
    next(&mut c).await;
    ch.basic_cancel("c".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    publish(&ch, &q, b"2").await;
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data, b"2");
}

#[tokio::test]
async fn exclusive_consumer_refuses_others() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let _c1 = ch
        .basic_consume(
            q.as_str().into(),
            "c1".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let (_c2, ch2) = b.channel().await;
    let err = ch2
        .basic_consume(
            q.as_str().into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
}

#[tokio::test]
async fn properties_and_headers_of_every_type_arrive_exactly() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString(LongString::from("v")));
    let mut h = FieldTable::default();
    h.insert("bool".into(), AMQPValue::Boolean(true));
    h.insert("i8".into(), AMQPValue::ShortShortInt(-5));
    h.insert("u8".into(), AMQPValue::ShortShortUInt(250));
    h.insert("i16".into(), AMQPValue::ShortInt(-300));
    h.insert("u16".into(), AMQPValue::ShortUInt(60000));
    h.insert("i32".into(), AMQPValue::LongInt(-70000));
    h.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    h.insert("i64".into(), AMQPValue::LongLongInt(-1 << 40));
    h.insert("f32".into(), AMQPValue::Float(1.5));
    h.insert("f64".into(), AMQPValue::Double(2.25));
    h.insert(
        "dec".into(),
        AMQPValue::DecimalValue(DecimalValue {
            scale: 2,
            value: 12345,
        }),
    );
    h.insert(
        "str".into(),
        AMQPValue::LongString(LongString::from("héllo")),
    );
    h.insert(
        "arr".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongInt(1),
            AMQPValue::LongString(LongString::from("two")),
        ])),
    );
    h.insert("ts".into(), AMQPValue::Timestamp(1_700_000_000));
    h.insert("table".into(), AMQPValue::FieldTable(nested));
    h.insert(
        "bytes".into(),
        AMQPValue::ByteArray(ByteArray::from(vec![0u8, 1, 2, 255])),
    );
    h.insert("void".into(), AMQPValue::Void);
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_content_encoding("gzip".into())
        .with_headers(h)
        .with_delivery_mode(2)
        .with_priority(5)
        .with_correlation_id("corr".into())
        .with_reply_to("reply".into())
        .with_expiration("60000".into())
        .with_message_id("mid".into())
        .with_timestamp(1_600_000_000)
        .with_type("kind".into())
        .with_user_id("guest".into())
        .with_app_id("app".into())
        .with_cluster_id("cluster".into());
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"{}",
        props.clone(),
    )
    .await
    .unwrap();
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.properties, props);
}

#[tokio::test]
async fn multi_mebibyte_bodies_span_frames() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let body: Vec<u8> = (0..5 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    publish(&ch, &q, &body).await;
    let mut c = ch
        .basic_consume(
            q.as_str().into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.data.len(), body.len());
    assert!(d.data == body);
    publish(&ch, &q, b"").await;
    assert_eq!(next(&mut c).await.data, b"");
}

#[tokio::test]
async fn publisher_confirms_ack_every_publish() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut confirms = vec![];
    for i in 0..200 {
        confirms.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                Default::default(),
                format!("{i}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap(),
        );
    }
    for c in confirms {
        assert!(c.await.unwrap().is_ack());
    }
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    let st = passive_queue(&ch, q.as_str()).await.unwrap();
    assert_eq!(st.message_count(), 200);
}

#[tokio::test]
async fn transactions_commit_and_rollback() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = queue(&ch).await;
    let (_c2, observer) = b.channel().await;
    ch.tx_select().await.unwrap();
    publish(&ch, &q, b"t1").await;
    publish(&ch, &q, b"t2").await;
    assert_eq!(
        ready_count(&observer, &q).await,
        0,
        "uncommitted publishes are invisible"
    );
    ch.tx_commit().await.unwrap();
    assert_eq!(ready_count(&observer, &q).await, 2);
    publish(&ch, &q, b"t3").await;
    ch.tx_rollback().await.unwrap();
    ch.tx_commit().await.unwrap();
    assert_eq!(
        ready_count(&observer, &q).await,
        2,
        "rolled back publish must not appear"
    );
    // acks in a transaction take effect at commit; rollback leaves them unacked
    let m = ch
        .basic_get(q.as_str().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.tx_rollback().await.unwrap();
    m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    ch.tx_commit().await.unwrap();
    assert_eq!(ready_count(&observer, &q).await, 1);
}

#[tokio::test]
async fn channel_flow_active_is_acknowledged() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    assert!(ch
        .channel_flow(ChannelFlowOptions { active: true })
        .await
        .unwrap());
}
