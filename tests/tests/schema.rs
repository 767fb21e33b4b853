//! JSON Schema validation per exchange through lapin: a schema added at
//! `/api/schemas`, an exchange declared with `x-schema`; in confirm mode a valid JSON
//! body is acked and routed, an invalid one nacked and routed nowhere.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

/// Publishes a JSON body in confirm mode; returns whether it was acked.
async fn acked(ch: &Channel, x: &str, body: &str) -> bool {
    ch.basic_publish(
        x.into(),
        "rk".into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default().with_content_type(ShortString::from("application/json")),
    )
    .await
    .unwrap()
    .await
    .unwrap()
    .is_ack()
}

#[tokio::test]
async fn an_invalid_json_body_is_nacked_in_confirm_mode() {
    let http = free_port();
    let listen = format!("127.0.0.1:{http}");
    let b = Broker::start_with(&["--http-listen", &listen]);
    let schema = r#"{"schema": {"type": "object", "required": ["id"],
        "properties": {"id": {"type": "integer"}}}}"#;
    assert_eq!(
        http_request(http, "PUT", "/api/schemas/%2F/ids", schema),
        201
    );
    let (_c, ch) = b.channel().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let x = unique("sx");
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-schema"),
        AMQPValue::LongString(LongString::from("ids")),
    );
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
    assert!(acked(&ch, &x, r#"{"id": 1}"#).await);
    assert!(!acked(&ch, &x, r#"{"id": "one"}"#).await);
    assert!(!acked(&ch, &x, "not json").await);
    assert!(acked(&ch, &x, r#"{"id": 2}"#).await);
    let mut got = vec![];
    while let Some(m) = ch
        .basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        got.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    assert_eq!(got, [r#"{"id": 1}"#, r#"{"id": 2}"#]);
}
