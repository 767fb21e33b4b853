//! Exchanges, queues and bindings through lapin: every exchange type routes as RabbitMQ's
//! does, declares report counts, deletes honour their conditions.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

async fn get_body(ch: &Channel, q: &str) -> Option<Vec<u8>> {
    ch.basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .map(|m| m.delivery.data.clone())
}

async fn drain(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = vec![];
    while let Some(b) = get_body(ch, q).await {
        out.push(String::from_utf8(b).unwrap());
    }
    out
}

async fn publish(ch: &Channel, ex: &str, rk: &str, body: &str) {
    ch.basic_publish(
        ex.into(),
        rk.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    )
    .await
    .unwrap();
}

async fn queue(ch: &Channel, name: &str) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("q");
    queue(&ch, &q).await;
    publish(&ch, "", &q, "hello").await;
    publish(&ch, "", "no-such-queue", "lost").await;
    let d = passive_queue(&ch, q.as_str()).await.unwrap();
    assert_eq!(d.message_count(), 1);
    assert_eq!(drain(&ch, &q).await, vec!["hello"]);
}

#[tokio::test]
async fn direct_exchange_routes_by_exact_key() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("direct");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (qa, qb) = (unique("a"), unique("b"));
    queue(&ch, &qa).await;
    queue(&ch, &qb).await;
    ch.queue_bind(
        qa.as_str().into(),
        x.as_str().into(),
        "info".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qb.as_str().into(),
        x.as_str().into(),
        "error".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        qb.as_str().into(),
        x.as_str().into(),
        "info".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &x, "info", "i").await;
    publish(&ch, &x, "error", "e").await;
    publish(&ch, &x, "debug", "d").await;
    assert_eq!(drain(&ch, &qa).await, vec!["i"]);
    assert_eq!(drain(&ch, &qb).await, vec!["i", "e"]);
    ch.queue_unbind(
        qb.as_str().into(),
        x.as_str().into(),
        "info".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &x, "info", "i2").await;
    assert_eq!(drain(&ch, &qb).await, Vec::<String>::new());
    assert_eq!(drain(&ch, &qa).await, vec!["i2"]);
}

#[tokio::test]
async fn fanout_exchange_copies_to_every_queue() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("fan");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let qs: Vec<String> = (0..5).map(|i| unique(&format!("f{i}"))).collect();
    for q in &qs {
        queue(&ch, q).await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "ignored".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    publish(&ch, &x, "any", "m1").await;
    publish(&ch, &x, "", "m2").await;
    for q in &qs {
        assert_eq!(drain(&ch, q).await, vec!["m1", "m2"]);
    }
}

#[tokio::test]
async fn topic_exchange_matches_star_and_hash() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("topic");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let (q1, q2) = (unique("q1"), unique("q2"));
    queue(&ch, &q1).await;
    queue(&ch, &q2).await;
    for (q, k) in [(&q1, "*.orange.*"), (&q2, "*.*.rabbit"), (&q2, "lazy.#")] {
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            k.into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    for k in [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "orange",
        "quick.orange.male.rabbit",
        "lazy.orange.male.rabbit",
        "lazy",
    ] {
        publish(&ch, &x, k, k).await;
    }
    assert_eq!(
        drain(&ch, &q1).await,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox"
        ]
    );
    assert_eq!(
        drain(&ch, &q2).await,
        vec![
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.male.rabbit",
            "lazy"
        ]
    );
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[tokio::test]
async fn headers_exchange_all_any_and_with_x() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("hdr");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Headers,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let names: Vec<String> = ["all", "any", "allx", "anyx"]
        .iter()
        .map(|n| unique(n))
        .collect();
    let args = [
        table(&[
            ("x-match", s("all")),
            ("format", s("pdf")),
            ("type", s("report")),
        ]),
        table(&[
            ("x-match", s("any")),
            ("format", s("pdf")),
            ("type", s("log")),
        ]),
        table(&[("x-match", s("all-with-x")), ("x-tenant", s("t1"))]),
        table(&[
            ("x-match", s("any-with-x")),
            ("x-tenant", s("t2")),
            ("format", s("zip")),
        ]),
    ];
    for (q, a) in names.iter().zip(args) {
        queue(&ch, q).await;
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            "".into(),
            Default::default(),
            a,
        )
        .await
        .unwrap();
    }
    let pubh = |h: FieldTable, body: &'static str| {
        let ch = ch.clone();
        let x = x.clone();
        async move {
            ch.basic_publish(
                x.as_str().into(),
                "".into(),
                Default::default(),
                body.as_bytes(),
                BasicProperties::default().with_headers(h),
            )
            .await
            .unwrap();
        }
    };
    pubh(
        table(&[("format", s("pdf")), ("type", s("report"))]),
        "pdf-report",
    )
    .await;
    pubh(table(&[("format", s("pdf"))]), "pdf").await;
    pubh(table(&[("type", s("log"))]), "log").await;
    pubh(table(&[("x-tenant", s("t1"))]), "t1").await;
    pubh(table(&[("x-tenant", s("t2"))]), "t2").await;
    assert_eq!(drain(&ch, &names[0]).await, vec!["pdf-report"]);
    assert_eq!(
        drain(&ch, &names[1]).await,
        vec!["pdf-report", "pdf", "log"]
    );
    // all-with-x compares x- arguments; plain all would have matched everything
    assert_eq!(drain(&ch, &names[2]).await, vec!["t1"]);
    assert_eq!(drain(&ch, &names[3]).await, vec!["t2"]);
}

#[tokio::test]
async fn predeclared_amq_exchanges_exist() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    for (n, k) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        ch.exchange_declare(
            n.into(),
            k.clone(),
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        // redeclaring with the same properties is allowed, as in RabbitMQ
        ch.exchange_declare(
            n.into(),
            k,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn exchange_to_exchange_bindings_route_through() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let (src, dst) = (unique("src"), unique("dst"));
    ch.exchange_declare(
        src.as_str().into(),
        ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        dst.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = unique("q");
    queue(&ch, &q).await;
    ch.queue_bind(
        q.as_str().into(),
        dst.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    // a cycle back to the source must not loop or duplicate
    ch.exchange_bind(
        src.as_str().into(),
        dst.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &src, "a.b", "yes").await;
    publish(&ch, &src, "b.a", "no").await;
    assert_eq!(drain(&ch, &q).await, vec!["yes"]);
    ch.exchange_unbind(
        dst.as_str().into(),
        src.as_str().into(),
        "a.#".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &src, "a.b", "gone").await;
    assert_eq!(drain(&ch, &q).await, Vec::<String>::new());
}

#[tokio::test]
async fn exchange_delete_if_unused_and_auto_delete() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let x = unique("x");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = unique("q");
    queue(&ch, &q).await;
    ch.queue_bind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let err = ch
        .exchange_delete(
            x.as_str().into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch = b.connect().await.create_channel().await.unwrap();
    // auto-delete: the exchange goes when its last binding goes
    ch.queue_unbind(
        q.as_str().into(),
        x.as_str().into(),
        "k".into(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        let c = b.connect().await.create_channel().await.unwrap();
        if c.exchange_declare(
            x.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .is_err()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        gone,
        "auto-delete exchange survived losing its last binding"
    );
    // plain delete
    let y = unique("y");
    ch.exchange_declare(
        y.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_delete(y.as_str().into(), Default::default())
        .await
        .unwrap();
    let err = ch
        .exchange_declare(
            y.as_str().into(),
            ExchangeKind::Fanout,
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
async fn internal_exchange_refuses_direct_publish_but_routes_e2e() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let (front, internal) = (unique("front"), unique("internal"));
    ch.exchange_declare(
        internal.as_str().into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            internal: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_declare(
        front.as_str().into(),
        ExchangeKind::Fanout,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.exchange_bind(
        internal.as_str().into(),
        front.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let q = unique("q");
    queue(&ch, &q).await;
    ch.queue_bind(
        q.as_str().into(),
        internal.as_str().into(),
        "".into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    publish(&ch, &front, "", "via-front").await;
    assert_eq!(drain(&ch, &q).await, vec!["via-front"]);
    // a direct publish to the internal exchange closes the channel with 403, read from
    // the wire (lapin may report the closed channel without its code when the close
    // overtakes its next call)
    let mut r = broker_tests::raw::Raw::open(b.port).await;
    r.expect_method().await; // open-ok
    r.open_channel(1).await;
    r.publish(1, &internal, "", b"direct").await;
    let closed = r.expect_close().await.expect("channel.close");
    assert_eq!((closed.channel, closed.code), (1, 403));
    assert_eq!(
        closed.text,
        format!("ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'")
    );
    // and nothing reached the queue
    assert!(drain(&ch, &q).await.is_empty());
}

#[tokio::test]
async fn queue_declare_variants_and_counts() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let server_named = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert!(
        server_named.name().as_str().starts_with("amq.gen-"),
        "{}",
        server_named.name()
    );
    let q = unique("durable");
    let mut args = FieldTable::default();
    args.insert("x-custom".into(), AMQPValue::LongInt(7));
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args.clone(),
    )
    .await
    .unwrap();
    for i in 0..3 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    let again = ch
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
    assert_eq!(again.message_count(), 3);
    assert_eq!(again.consumer_count(), 0);
    let _consumer = ch
        .basic_consume(
            q.as_str().into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = b.connect().await.create_channel().await.unwrap();
    let passive = passive_queue(&ch2, q.as_str()).await.unwrap();
    assert_eq!(passive.consumer_count(), 1);
}

#[tokio::test]
async fn purge_and_delete_conditions() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("q");
    queue(&ch, &q).await;
    for i in 0..4 {
        publish(&ch, "", &q, &i.to_string()).await;
    }
    assert_eq!(
        ch.queue_purge(q.as_str().into(), Default::default())
            .await
            .unwrap(),
        4
    );
    publish(&ch, "", &q, "x").await;
    let err = ch
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch = b.connect().await.create_channel().await.unwrap();
    let _cons = ch
        .basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let ch2 = b.connect().await.create_channel().await.unwrap();
    let err = ch2
        .queue_delete(
            q.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&err), Some(406));
    let ch3 = b.connect().await.create_channel().await.unwrap();
    ch3.queue_delete(q.as_str().into(), Default::default())
        .await
        .unwrap();
    let err = passive_queue(&ch3, q.as_str()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(404));
}

#[tokio::test]
async fn exclusive_queue_goes_with_its_connection() {
    let b = Broker::start();
    let c1 = b.connect().await;
    let ch1 = c1.create_channel().await.unwrap();
    let q = unique("excl");
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
    let err = passive_queue(&ch2, q.as_str()).await.unwrap_err();
    assert_eq!(reply_code(&err), Some(405));
    c1.close(200, "bye".into()).await.unwrap();
    let (_c3, ch3) = b.channel().await;
    let mut gone = false;
    for _ in 0..50 {
        let ch = b.connect().await.create_channel().await.unwrap();
        match passive_queue(&ch, q.as_str()).await {
            Err(e) if reply_code(&e) == Some(404) => {
                gone = true;
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(gone);
    drop(ch3);
}

#[tokio::test]
async fn auto_delete_queue_goes_with_last_consumer() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    let q = unique("ad");
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let cons = ch
        .basic_consume(
            q.as_str().into(),
            "t".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_cancel(cons.tag(), Default::default())
        .await
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        let ch = b.connect().await.create_channel().await.unwrap();
        if passive_queue(&ch, q.as_str()).await.is_err() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone);
}
