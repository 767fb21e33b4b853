//! A dynamic shovel through lapin: a queue-to-queue shovel on the same broker, set
//! through `/api/parameters/shovel`, moves what a lapin publisher sends, in order with
//! its properties and headers, and the source queue drains.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

#[tokio::test]
async fn queue_to_queue_shovel_moves_messages_in_order() {
    let http = free_port();
    let listen = format!("127.0.0.1:{http}");
    let b = Broker::start_with(&["--http-listen", &listen]);
    let (_c, ch) = b.channel().await;
    let (src, dst) = (unique("shv-src"), unique("shv-dst"));
    ch.queue_declare(
        src.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(
        dst.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("k"),
        AMQPValue::LongString(LongString::from("v")),
    );
    for i in 0..100 {
        let props = BasicProperties::default()
            .with_headers(headers.clone())
            .with_message_id(format!("id-{i}").as_str().into())
            .with_delivery_mode(2);
        ch.basic_publish(
            "".into(),
            src.as_str().into(),
            BasicPublishOptions::default(),
            format!("{i}").as_bytes(),
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let body = format!(
        r#"{{"value":{{"src-uri":"amqp://","src-queue":"{src}","dest-uri":"amqp://","dest-queue":"{dst}","src-prefetch-count":16}}}}"#
    );
    assert_eq!(
        http_request(
            http,
            "PUT",
            "/api/parameters/shovel/%2F/lapin-shovel",
            &body
        ),
        201
    );
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while got.len() < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 100 arrived",
            got.len()
        );
        match ch
            .basic_get(dst.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => got.push(m),
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m.delivery.data, format!("{i}").as_bytes());
        let p = &m.delivery.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(format!("id-{i}").as_str())
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        let h = p.headers().as_ref().expect("headers kept");
        assert_eq!(
            h.inner().get("k"),
            Some(&AMQPValue::LongString(LongString::from("v")))
        );
    }
    assert_eq!(ready_count(&ch, &src).await, 0, "the source drained");
    assert_eq!(
        http_request(
            http,
            "DELETE",
            "/api/parameters/shovel/%2F/lapin-shovel",
            ""
        ),
        204
    );
}
