//! Unit tests of delayed retry: the back-off shapes, the arguments, and the queue
//! state holding returned messages until they are due.

use super::*;
use crate::args::QueueArgs;
use crate::deadletter::Reason;
use crate::message::Message;
use crate::names::ChannelKey;
use crate::queue::QueueState;
use crate::test_support::table;
use amq_protocol::types::{AMQPValue, LongString};
use bytes::Bytes;
use std::sync::Arc;

fn policy(min: u64, max: Option<u64>, multiplier: Option<u32>, jitter: u8) -> RetryPolicy {
    RetryPolicy {
        kind: RetryKind::All,
        min_ms: min,
        max_ms: max,
        multiplier,
        jitter_pct: jitter,
    }
}

#[test]
fn linear_back_off_is_rabbitmq_s_formula() {
    // min(min × delivery_count, max)
    let p = policy(1000, Some(3500), None, 0);
    let delays: Vec<u64> = (1..=5).map(|n| p.delay(n, 7)).collect();
    assert_eq!(delays, [1000, 2000, 3000, 3500, 3500]);
    // a return that did not count still waits the first step
    assert_eq!(p.delay(0, 7), 1000);
}

#[test]
fn constant_and_exponential_back_off_are_lavinmq_s() {
    let constant = policy(250, None, Some(1), 0);
    assert!((1..=6).all(|n| constant.delay(n, 1) == 250));
    let exp = policy(100, Some(5000), Some(2), 0);
    let delays: Vec<u64> = (1..=8).map(|n| exp.delay(n, 1)).collect();
    assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    // no overflow however many returns: capped at 2^32 - 1 ms without a max
    let huge = policy(1000, None, Some(10), 0);
    assert_eq!(huge.delay(u32::MAX, 1), DELAY_CAP_MS);
}

#[test]
fn jitter_stays_within_its_share_and_spreads() {
    let p = policy(1000, None, Some(2), 20);
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..1000u64 {
        let d = p.delay(3, id);
        assert!((3200..=4000).contains(&d), "{d}");
        seen.insert(d / 100);
    }
    // drawn over the whole range, not stuck at one end
    assert!(seen.len() >= 8, "{seen:?}");
    // the same message and count always draw the same delay (replicas agree)
    assert_eq!(p.delay(3, 42), p.delay(3, 42));
}

fn text(pairs: &[(&str, AMQPValue)], queue_type: &str) -> String {
    let mut pairs = pairs.to_vec();
    pairs.push(("x-queue-type", s(queue_type)));
    match QueueArgs::parse(&table(&pairs), "q", "/") {
        Err(e) => e.reply_text(),
        Ok(a) => format!("ok {:?} limit {:?}", a.retry, a.delivery_limit),
    }
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

#[test]
fn arguments_of_rabbitmq_and_lavinmq_are_read() {
    let a = QueueArgs::parse(
        &table(&[
            ("x-delayed-retry-type", s("failed")),
            ("x-delayed-retry-min", AMQPValue::LongInt(1000)),
            ("x-delayed-retry-max", AMQPValue::LongLongInt(30_000)),
        ]),
        "q",
        "/",
    )
    .unwrap();
    assert_eq!(
        a.retry,
        Some(RetryPolicy {
            kind: RetryKind::Failed,
            ..policy(1000, Some(30_000), None, 0)
        })
    );
    // a classic queue with retry gets LavinMQ's default delivery limit
    assert_eq!(a.delivery_limit, Some(RETRY_DELIVERY_LIMIT));
    // LavinMQ: the minimum alone turns it on, for every return
    let a = QueueArgs::parse(
        &table(&[
            ("x-delayed-retry-min", AMQPValue::LongInt(10)),
            ("x-delayed-retry-multiplier", AMQPValue::LongInt(3)),
            ("x-delayed-retry-jitter", AMQPValue::LongInt(25)),
            ("x-delivery-limit", AMQPValue::LongInt(0)),
        ]),
        "q",
        "/",
    )
    .unwrap();
    assert_eq!(a.retry, Some(policy(10, None, Some(3), 25)));
    assert_eq!(a.delivery_limit, Some(0), "an explicit limit is kept");
    // disabled, or nothing given: off
    assert!(text(
        &[
            ("x-delayed-retry-type", s("disabled")),
            ("x-delayed-retry-min", AMQPValue::LongInt(5))
        ],
        "classic"
    )
    .starts_with("ok None"));
    assert!(
        text(&[("x-delayed-retry-max", AMQPValue::LongInt(5))], "quorum").starts_with("ok None")
    );
    assert!(text(
        &[
            ("x-delayed-retry-type", s("all")),
            ("x-delayed-retry-min", AMQPValue::LongInt(5))
        ],
        "quorum"
    )
    .starts_with("ok Some"));
}

#[test]
fn bad_arguments_are_refused_with_a_clear_text() {
    let min = ("x-delayed-retry-min", AMQPValue::LongInt(100));
    let cases: &[(&[(&str, AMQPValue)], &str)] = &[
        (&[("x-delayed-retry-type", s("sometimes")), min.clone()], "invalid arg 'x-delayed-retry-type' for queue 'q' in vhost '/': \"unknown retry type 'sometimes': expected disabled, all, failed or returned\""),
        (&[("x-delayed-retry-type", s("all"))], "x-delayed-retry-min is required"),
        (&[("x-delayed-retry-min", AMQPValue::LongInt(0))], "invalid arg 'x-delayed-retry-min' for queue 'q' in vhost '/': {value_zero,0}"),
        (&[("x-delayed-retry-min", AMQPValue::LongInt(-5))], "{value_negative,-5}"),
        (&[("x-delayed-retry-min", s("1s"))], "\"expected integer, got longstr\""),
        (&[min.clone(), ("x-delayed-retry-max", AMQPValue::LongInt(50))], "invalid arg 'x-delayed-retry-max' for queue 'q' in vhost '/': \"50 is less than x-delayed-retry-min (100)\""),
        (&[min.clone(), ("x-delayed-retry-multiplier", AMQPValue::LongInt(0))], "invalid arg 'x-delayed-retry-multiplier' for queue 'q' in vhost '/': {value_zero,0}"),
        (&[min.clone(), ("x-delayed-retry-jitter", AMQPValue::LongInt(101))], "\"101 is not a percentage (0 to 100)\""),
    ];
    for (args, want) in cases {
        for t in ["classic", "quorum"] {
            let got = text(args, t);
            assert!(got.contains(want), "{t}: {got} lacks {want}");
        }
    }
    assert!(text(&[min], "stream").contains("x-delayed-retry-min"));
}

const CH: ChannelKey = ChannelKey {
    connection: 1,
    channel: 1,
};

fn msg(body: &'static str, persist_id: Option<u64>) -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: Default::default(),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(body.as_bytes()),
        persist_id,
        arrival_ms: 1000,
    })
}

fn retry_queue(p: RetryPolicy, limit: Option<u64>) -> QueueState<()> {
    let mut q = QueueState::new(QueueArgs {
        retry: Some(p),
        delivery_limit: limit,
        ..Default::default()
    });
    q.tick(1000);
    q
}

#[test]
fn a_returned_message_waits_then_goes_back_to_its_place() {
    let mut q = retry_queue(policy(100, None, None, 0), None);
    q.publish(msg("a", None));
    q.publish(msg("b", None));
    let a = q.get(CH, false).unwrap();
    q.requeue(&[a.id], true);
    assert_eq!((q.ready_count(), q.delayed_count()), (1, 1));
    assert_eq!(q.next_expiry(), Some(1100));
    q.tick(1099);
    q.expire();
    assert_eq!(q.delayed_count(), 1, "not before its time");
    q.tick(1100);
    let again = q.get(CH, false).unwrap();
    assert_eq!(again.id, a.id, "back before b, at its place");
    assert!(again.redelivered);
    assert_eq!(again.returns, 1);
    // the second return waits twice as long
    q.requeue(&[again.id], true);
    assert_eq!(q.next_expiry(), Some(1300));
}

#[test]
fn the_delivery_limit_still_dead_letters_and_purge_takes_the_waiting() {
    let mut q = retry_queue(policy(10, None, None, 0), Some(1));
    q.publish(msg("poison", None));
    let e = q.get(CH, false).unwrap();
    q.requeue(&[e.id], true);
    q.tick(2000);
    let e = q.get(CH, false).unwrap();
    q.requeue(&[e.id], true);
    assert_eq!(q.delayed_count(), 0);
    assert_eq!(q.take_dead()[0].1, Reason::DeliveryLimit);
    q.publish(msg("w", None));
    let e = q.get(CH, false).unwrap();
    q.requeue(&[e.id], true);
    assert!(
        q.check_delete(false, true, "q", "/").is_err(),
        "a waiting message is not empty"
    );
    let purged = q.purge();
    assert_eq!((purged.count, q.delayed_count(), q.bytes()), (1, 0, 0));
}

#[test]
fn the_kind_decides_which_returns_wait() {
    let mut failed = retry_queue(
        RetryPolicy {
            kind: RetryKind::Failed,
            ..policy(50, None, None, 0)
        },
        None,
    );
    failed.publish(msg("a", None));
    let e = failed.get(CH, false).unwrap();
    failed.requeue_uncounted(&[e.id]);
    assert_eq!(
        failed.delayed_count(),
        0,
        "a leader change is not a failure"
    );
    let e = failed.get(CH, false).unwrap();
    failed.requeue(&[e.id], true);
    assert_eq!(failed.delayed_count(), 1);
    let mut returned = retry_queue(
        RetryPolicy {
            kind: RetryKind::Returned,
            ..policy(50, None, None, 0)
        },
        None,
    );
    returned.publish(msg("a", None));
    let e = returned.get(CH, false).unwrap();
    returned.requeue(&[e.id], true);
    assert_eq!(returned.delayed_count(), 0);
    let e = returned.get(CH, false).unwrap();
    returned.requeue_uncounted(&[e.id]);
    assert_eq!(returned.delayed_count(), 1);
}

#[test]
fn a_quorum_return_goes_to_the_back_after_its_wait() {
    let mut q = retry_queue(policy(100, None, None, 0), None);
    q.publish(msg("a", None));
    let a = q.get(CH, false).unwrap();
    q.return_to_back(&[a.id]);
    q.publish(msg("b", None));
    q.tick(1200);
    q.expire();
    let ids = q.ready_ids();
    assert_eq!(ids.len(), 2);
    let first = q.get(CH, true).unwrap();
    assert_eq!(first.msg.loaded().unwrap().body.as_ref(), b"b");
    assert!(ids[1] > ids[0], "a new id behind b");
}

#[test]
fn waiting_persisted_messages_past_the_memory_share_are_paged() {
    let mut q = retry_queue(policy(1000, None, None, 0), None);
    let big: &'static str = Box::leak("x".repeat(1 << 20).into_boxed_str());
    for i in 0..12u64 {
        q.publish(msg(big, Some(i + 1)));
    }
    let mut ids = Vec::new();
    while let Some(e) = q.get(CH, false) {
        ids.push(e.id);
    }
    q.requeue(&ids, true);
    assert_eq!(q.delayed_count(), 12);
    let paged = q
        .delayed
        .iter()
        .filter(|w| w.entry.msg.loaded().is_none())
        .count();
    assert!(paged >= 3, "{paged} paged");
    // when due they come back, paged ones as references the actor reads back
    q.tick(5000);
    q.expire();
    assert_eq!((q.ready_count(), q.delayed_count()), (12, 0));
}

#[test]
fn turning_retry_off_releases_every_waiting_message() {
    let mut q = retry_queue(policy(60_000, None, None, 0), None);
    q.publish(msg("a", None));
    let e = q.get(CH, false).unwrap();
    q.requeue(&[e.id], true);
    q.set_args(QueueArgs::default());
    assert_eq!((q.ready_count(), q.delayed_count()), (1, 0));
}

#[test]
fn a_give_back_is_neither_counted_nor_delayed() {
    let mut q = retry_queue(policy(60_000, None, None, 0), Some(0));
    q.publish(msg("a", None));
    let e = q.get(CH, false).unwrap();
    assert_eq!(q.give_back(&[e.id]), 1);
    assert_eq!((q.ready_count(), q.delayed_count()), (1, 0));
    let again = q.get(CH, false).unwrap();
    assert_eq!((again.id, again.returns), (e.id, 0));
    assert!(q.take_dead().is_empty());
}
