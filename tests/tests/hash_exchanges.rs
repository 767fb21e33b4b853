//! The hashing exchanges through lapin: `x-consistent-hash` (binding keys are weights,
//! hashing the routing key or, with `hash-header`, a header) and `x-modulus-hash` each
//! route every message to exactly one of their queues, the same key always to the same
//! queue, and the plugin's 406 refuses a weight that is not an integer.

use broker_tests::*;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::collections::HashMap;

async fn drain(ch: &Channel, q: &str) -> Vec<String> {
    let mut out = vec![];
    while let Some(m) = ch
        .basic_get(q.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8(m.delivery.data.clone()).unwrap());
    }
    out
}

fn table(k: &str, v: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        ShortString::from(k),
        AMQPValue::LongString(LongString::from(v)),
    );
    t
}

/// An exchange of `kind` with `weights.len()` queues bound with those keys.
async fn setup(
    ch: &Channel,
    kind: &str,
    args: FieldTable,
    weights: &[&str],
) -> (String, Vec<String>) {
    let x = unique("hx");
    ch.exchange_declare(
        x.as_str().into(),
        ExchangeKind::Custom(kind.into()),
        ExchangeDeclareOptions::default(),
        args,
    )
    .await
    .unwrap();
    let mut queues = vec![];
    for w in weights {
        let q = unique("hq");
        ch.queue_declare(q.as_str().into(), Default::default(), FieldTable::default())
            .await
            .unwrap();
        ch.queue_bind(
            q.as_str().into(),
            x.as_str().into(),
            (*w).into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        queues.push(q);
    }
    (x, queues)
}

/// Publishes each (routing key, headers value, body) with confirms, then says which
/// queue each body reached (every body exactly once).
async fn place(
    ch: &Channel,
    x: &str,
    queues: &[String],
    msgs: &[(String, String)],
) -> HashMap<String, String> {
    for (rk, body) in msgs {
        let props = BasicProperties::default().with_headers(table("user", body));
        ch.basic_publish(
            x.into(),
            rk.as_str().into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            props,
        )
        .await
        .unwrap();
    }
    assert!(ch.wait_for_confirms().await.unwrap().is_empty());
    let mut at = HashMap::new();
    for q in queues {
        for body in drain(ch, q).await {
            at.entry(body).or_insert_with(Vec::new).push(q.clone());
        }
    }
    assert_eq!(
        at.len(),
        msgs.iter()
            .map(|m| &m.1)
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    at.into_iter()
        .map(|(body, qs)| {
            assert!(qs.windows(2).all(|w| w[0] == w[1]), "{body} reached {qs:?}");
            (body, qs[0].clone())
        })
        .collect()
}

#[tokio::test]
async fn both_types_route_each_key_to_one_queue_and_spread_keys() {
    let b = Broker::start();
    let (_c, ch) = b.channel().await;
    ch.confirm_select(Default::default()).await.unwrap();
    for kind in ["x-consistent-hash", "x-modulus-hash"] {
        let (x, queues) = setup(&ch, kind, FieldTable::default(), &["1", "1", "1", "1"]).await;
        // every key twice: both copies must land in one queue
        let msgs: Vec<(String, String)> = (0..400)
            .flat_map(|i| {
                let k = format!("k{i}");
                [(k.clone(), k.clone()), (k.clone(), k)]
            })
            .collect();
        let at = place(&ch, &x, &queues, &msgs).await;
        let mut per_queue: HashMap<&String, usize> = HashMap::new();
        for q in at.values() {
            *per_queue.entry(q).or_default() += 1;
        }
        assert_eq!(per_queue.len(), 4, "{kind}: {per_queue:?}");
        assert!(
            per_queue.values().all(|n| (60..=140).contains(n)),
            "{kind}: {per_queue:?}"
        );
    }
}

#[tokio::test]
async fn hash_header_routes_by_the_header_and_bad_weights_are_refused() {
    let b = Broker::start();
    let (c, ch) = b.channel().await;
    ch.confirm_select(Default::default()).await.unwrap();
    let args = table("hash-header", "user");
    let (x, queues) = setup(&ch, "x-consistent-hash", args, &["1", "2", "1"]).await;
    // the routing key changes every time; the header value decides
    let msgs: Vec<(String, String)> = (0..300)
        .map(|i| (format!("rk{i}"), format!("user-{}", i % 20)))
        .collect();
    let at = place(&ch, &x, &queues, &msgs).await;
    assert_eq!(at.len(), 20);
    let bad = c.create_channel().await.unwrap();
    let e = bad
        .queue_bind(
            queues[0].as_str().into(),
            x.as_str().into(),
            "heavy".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(reply_code(&e), Some(406));
    assert_eq!(
        reply_text(&e),
        "PRECONDITION_FAILED - The binding key must be an integer: <<\"heavy\">>"
    );
}
