//! The error table through lapin: each reply code with RabbitMQ's scope. A channel error
//! closes that channel only; the connection and its other channels go on.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};

async fn declare(
    ch: &lapin::Channel,
    q: &str,
    durable: bool,
) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
}

#[tokio::test]
async fn not_found_404_closes_only_the_channel() {
    let b = Broker::start();
    let c = b.connect().await;
    let ch1 = c.create_channel().await.unwrap();
    let ch2 = c.create_channel().await.unwrap();
    let err = passive_queue(&ch1, "missing").await.unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
    assert_eq!(
        reply_text(&err),
        "NOT_FOUND - no queue 'missing' in vhost '/'"
    );
    // the other channel and the connection go on
    declare(&ch2, &unique("ok"), false).await.unwrap();
    assert!(c.status().connected());
    let ch3 = c.create_channel().await.unwrap();
    let err = ch3
        .exchange_declare(
            "nope".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn resource_locked_405_for_another_connections_exclusive_queue() {
    let b = Broker::start();
    let (_c1, ch1) = b.channel().await;
    let q = unique("ex");
    ch1.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
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
            "".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(405));
}

#[tokio::test]
async fn precondition_failed_406_on_inequivalent_redeclare() {
    let b = Broker::start();
    let (c, ch) = b.channel().await;
    let q = unique("q");
    declare(&ch, &q, false).await.unwrap();
    let err = declare(&ch, &q, true).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    assert!(
        reply_text(&err).starts_with("PRECONDITION_FAILED - inequivalent arg 'durable'"),
        "{}",
        reply_text(&err)
    );
    let ch = c.create_channel().await.unwrap();
    let x = unique("x");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_declare(
            x.as_str().into(),
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch = c.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    let err = ch
        .queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
}

#[tokio::test]
async fn precondition_failed_406_on_unknown_or_double_ack() {
    let b = Broker::start();
    // an unknown tag, seen on the wire (lapin may report a closed channel without the
    // code when the close overtakes its next call)
    {
        use broker_wire::protocol::{basic, AMQPClass};
        let mut r = broker_tests::raw::Raw::open(b.port).await;
        r.expect_method().await; // open-ok
        r.open_channel(1).await;
        r.method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: 99,
                multiple: false,
            })),
        )
        .await;
        let closed = r.expect_close().await.expect("channel.close");
        assert_eq!((closed.channel, closed.code), (1, 406));
        assert_eq!(closed.text, "PRECONDITION_FAILED - unknown delivery tag 99");
    }
    // a double ack, also read from the wire: a message is queued by a lapin channel,
    // then fetched with basic.get on a raw channel and acked twice
    let (_c, ch) = b.channel().await;
    let q = unique("q");
    declare(&ch, &q, false).await.unwrap();
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        Default::default(),
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    {
        use broker_wire::protocol::{basic, AMQPClass};
        let mut r = broker_tests::raw::Raw::open(b.port).await;
        r.expect_method().await; // open-ok
        r.open_channel(2).await;
        r.method(
            2,
            AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
                queue: q.as_str().into(),
                no_ack: false,
            })),
        )
        .await;
        let tag = match r.expect_method().await {
            AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)) => ok.delivery_tag,
            other => panic!("expected basic.get-ok, got {other:?}"),
        };
        assert_eq!(tag, 1);
        for _ in 0..2 {
            r.method(
                2,
                AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple: false,
                })),
            )
            .await;
        }
        let closed = r.expect_close().await.expect("channel.close");
        assert_eq!((closed.channel, closed.code), (2, 406));
        assert_eq!(closed.text, "PRECONDITION_FAILED - unknown delivery tag 1");
    }
    // the first ack took the message: the queue is empty
    let q_state = passive_queue(&ch, q.as_str()).await.unwrap();
    assert_eq!(q_state.message_count(), 0);
}

#[tokio::test]
async fn access_refused_403_rows() {
    let b = Broker::start();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .exchange_declare(
            "amq.custom".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            "amq.custom".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let ch = c.create_channel().await.unwrap();
    let q = unique("q");
    declare(&ch, &q, false).await.unwrap();
    let err = ch
        .queue_bind(
            q.as_str().into(),
            "".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .exchange_delete("".into(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    let ch = c.create_channel().await.unwrap();
    let err = ch
        .exchange_delete("amq.direct".into(), Default::default())
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(403));
    assert!(c.status().connected());
}

#[tokio::test]
async fn command_invalid_503_for_unknown_exchange_type_closes_connection() {
    let b = Broker::start();
    let (c, ch) = b.channel().await;
    let err = ch
        .exchange_declare(
            unique("x").as_str().into(),
            ExchangeKind::Custom("x-nope".into()),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(503));
    assert!(eventually(3, || !c.status().connected()).await);
}

#[tokio::test]
async fn not_allowed_530_for_reused_consumer_tag() {
    use broker_tests::raw::Raw;
    use broker_wire::protocol::{basic, channel, queue, AMQPClass};
    let b = Broker::start();
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    r.method(
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await;
    r.expect_method().await;
    r.method(
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: "tagq".into(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await;
    r.expect_method().await;
    let consume = || {
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: "tagq".into(),
            consumer_tag: "same".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        }))
    };
    r.method(1, consume()).await;
    assert!(matches!(
        r.expect_method().await,
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_))
    ));
    r.method(1, consume()).await;
    let c = r.expect_close().await.unwrap();
    assert_eq!(
        (c.channel, c.code, c.class_id, c.method_id),
        (0, 530, 60, 20)
    );
    assert_eq!(c.text, "NOT_ALLOWED - attempt to reuse consumer tag 'same'");
}

#[tokio::test]
async fn not_implemented_540_rows() {
    let b = Broker::start();
    let (c, ch) = b.channel().await;
    let err = ch
        .channel_flow(ChannelFlowOptions { active: false })
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(540));
    assert!(eventually(3, || !c.status().connected()).await);
    let (c, ch) = b.channel().await;
    let err = ch
        .basic_recover(BasicRecoverOptions { requeue: false })
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(540));
    assert!(eventually(3, || !c.status().connected()).await);
    let (c, ch) = b.channel().await;
    ch.basic_publish(
        "".into(),
        "q".into(),
        BasicPublishOptions {
            immediate: true,
            ..Default::default()
        },
        b"x",
        BasicProperties::default(),
    )
    .await
    .unwrap();
    assert!(eventually(3, || !c.status().connected()).await);
}

#[tokio::test]
async fn tx_and_confirm_mode_errors_are_406() {
    let b = Broker::start();
    let c = b.connect().await;
    let ch = c.create_channel().await.unwrap();
    assert_eq!(reply_code(&ch.tx_commit().await.unwrap_err()), Some(406));
    let ch = c.create_channel().await.unwrap();
    assert_eq!(reply_code(&ch.tx_rollback().await.unwrap_err()), Some(406));
    let ch = c.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    assert_eq!(reply_code(&ch.tx_select().await.unwrap_err()), Some(406));
    assert!(c.status().connected());
}

/// Seen on the wire: lapin reports a channel closed without its code when the close
/// overtakes its next call, which a fast broker makes likely.
#[tokio::test]
async fn publish_to_missing_exchange_is_404() {
    let b = Broker::start();
    let mut r = broker_tests::raw::Raw::open(b.port).await;
    r.expect_method().await; // open-ok
    r.open_channel(1).await;
    r.publish(1, "nope", "k", b"x").await;
    let closed = r.expect_close().await.expect("channel.close");
    assert_eq!((closed.channel, closed.code), (1, 404));
    assert_eq!(closed.text, "NOT_FOUND - no exchange 'nope' in vhost '/'");
    // the connection and its other channels go on
    let (c, ch) = b.channel().await;
    declare(&ch, &unique("q"), false).await.unwrap();
    assert!(c.status().connected());
}

#[tokio::test]
async fn shutdown_sends_connection_forced_320() {
    use broker_tests::raw::Raw;
    let mut b = Broker::start();
    let mut r = Raw::open(b.port).await;
    r.expect_method().await;
    let (c, _ch) = b.channel().await;
    let status = b.terminate();
    assert!(status.success(), "broker exit status {status:?}");
    let close = r
        .expect_close()
        .await
        .expect("no connection.close on shutdown");
    assert_eq!((close.channel, close.code), (0, 320));
    assert!(
        close.text.starts_with("CONNECTION_FORCED"),
        "{}",
        close.text
    );
    assert!(eventually(3, || !c.status().connected()).await);
}
