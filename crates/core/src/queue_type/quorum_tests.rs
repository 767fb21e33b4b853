//! Unit tests of the quorum type's declare rules, with the texts RabbitMQ 3.10 gives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use super::*;
use crate::test_support::table;
use amq_protocol::types::LongString;

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn declare_with(
    pairs: &[(&str, AMQPValue)],
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
) -> Result<QueueArgs, AmqpError> {
    let mut all = vec![("x-queue-type", s("quorum"))];
    all.extend(pairs.iter().cloned());
    let t = table(&all);
    Quorum.validate_declare(&QueueDeclare {
        name: "q",
        vhost: "/",
        durable,
        exclusive,
        auto_delete,
        arguments: &t,
    })
}

fn ok(pairs: &[(&str, AMQPValue)]) -> QueueArgs {
    declare_with(pairs, true, false, false).unwrap()
}

fn refusal(pairs: &[(&str, AMQPValue)]) -> String {
    declare_with(pairs, true, false, false)
        .unwrap_err()
        .reply_text()
}

const PREFIX: &str = "PRECONDITION_FAILED - invalid arg ";

#[test]
fn durable_only_in_rabbitmqs_order() {
    let text = |d, e, a| declare_with(&[], d, e, a).unwrap_err().reply_text();
    let prop = |p: &str| {
        format!("PRECONDITION_FAILED - invalid property '{p}' for queue 'q' in vhost '/'")
    };
    assert_eq!(text(false, false, false), prop("non-durable"));
    assert_eq!(text(true, true, false), prop("exclusive-owner"));
    assert_eq!(text(false, true, false), prop("exclusive-owner"));
    assert_eq!(text(true, false, true), prop("auto-delete"));
    assert_eq!(text(false, true, true), prop("auto-delete"));
    assert!(declare_with(&[], true, false, false).is_ok());
}

#[test]
fn delivery_limit_defaults_to_20_and_negative_means_none() {
    assert_eq!(ok(&[]).delivery_limit, Some(DEFAULT_DELIVERY_LIMIT));
    assert_eq!(
        ok(&[("x-delivery-limit", AMQPValue::LongInt(0))]).delivery_limit,
        Some(0)
    );
    assert_eq!(
        ok(&[("x-delivery-limit", AMQPValue::LongInt(5))]).delivery_limit,
        Some(5)
    );
    assert_eq!(
        ok(&[("x-delivery-limit", AMQPValue::LongInt(-1))]).delivery_limit,
        None
    );
    // RabbitMQ does not check the type
    assert_eq!(ok(&[("x-delivery-limit", s("x"))]).delivery_limit, Some(20));
    assert_eq!(
        ok(&[("x-delivery-limit", AMQPValue::Boolean(true))]).delivery_limit,
        Some(20)
    );
}

#[test]
fn accepted_arguments_are_read() {
    let a = ok(&[
        ("x-quorum-initial-group-size", AMQPValue::LongInt(3)),
        ("x-max-length", AMQPValue::LongInt(0)),
        ("x-max-length-bytes", AMQPValue::LongInt(10)),
        ("x-message-ttl", AMQPValue::LongInt(0)),
        ("x-expires", AMQPValue::LongInt(1000)),
        ("x-dead-letter-exchange", s("dlx")),
        ("x-dead-letter-routing-key", s("k")),
        ("x-dead-letter-strategy", s("at-least-once")),
        ("x-single-active-consumer", AMQPValue::Boolean(true)),
        ("x-max-in-memory-length", AMQPValue::LongInt(5)),
        ("x-max-in-memory-bytes", AMQPValue::LongInt(0)),
        ("x-queue-leader-locator", s("balanced")),
        ("x-custom", AMQPValue::LongInt(1)),
    ]);
    assert_eq!(a.quorum_initial_group_size, Some(3));
    assert_eq!(a.max_length, Some(0));
    assert_eq!(a.max_length_bytes, Some(10));
    assert_eq!(a.message_ttl, Some(0));
    assert_eq!(a.expires, Some(1000));
    assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
    assert_eq!(a.dead_letter_routing_key.as_deref(), Some("k"));
    assert!(a.single_active_consumer);
    for l in ["client-local", "balanced", "random", "least-leaders"] {
        ok(&[("x-queue-leader-locator", s(l))]);
    }
}

#[test]
fn overflow_reject_publish_dlx_acts_as_drop_head() {
    let of = |v: &str| ok(&[("x-overflow", s(v))]).overflow;
    assert_eq!(of("drop-head"), Overflow::DropHead);
    assert_eq!(of("reject-publish"), Overflow::RejectPublish);
    assert_eq!(of("reject-publish-dlx"), Overflow::DropHead);
    assert_eq!(
        refusal(&[("x-overflow", s("nope"))]),
        format!("{PREFIX}'x-overflow' for queue 'q' in vhost '/': invalid_overflow")
    );
    assert!(refusal(&[("x-overflow", AMQPValue::LongInt(1))])
        .ends_with("{unacceptable_type,signedint}"));
}

#[test]
fn bad_values_get_rabbitmq_texts() {
    let cases: &[(&str, AMQPValue, &str)] = &[
        (
            "x-quorum-initial-group-size",
            AMQPValue::LongInt(0),
            "{value_zero,0}",
        ),
        (
            "x-quorum-initial-group-size",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
        (
            "x-quorum-initial-group-size",
            s("x"),
            "\"expected integer, got longstr\"",
        ),
        (
            "x-max-length",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
        (
            "x-max-length-bytes",
            s("x"),
            "\"expected integer, got longstr\"",
        ),
        (
            "x-message-ttl",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
        ("x-expires", AMQPValue::LongInt(0), "{value_zero,0}"),
        (
            "x-max-in-memory-length",
            AMQPValue::LongInt(-1),
            "{value_negative,-1}",
        ),
        (
            "x-max-in-memory-bytes",
            s("x"),
            "\"expected integer, got longstr\"",
        ),
        ("x-dead-letter-strategy", s("nope"), "invalid_dlx_strategy"),
        (
            "x-dead-letter-strategy",
            AMQPValue::LongInt(1),
            "{unacceptable_type,signedint}",
        ),
        (
            "x-single-active-consumer",
            AMQPValue::LongInt(1),
            "{unacceptable_type,signedint}",
        ),
        (
            "x-queue-leader-locator",
            s("nope"),
            "invalid_queue_locator_arg",
        ),
        (
            "x-queue-leader-locator",
            AMQPValue::LongInt(1),
            "{unacceptable_type,signedint}",
        ),
    ];
    for (k, v, why) in cases {
        assert_eq!(
            refusal(&[(*k, v.clone())]),
            format!("{PREFIX}'{k}' for queue 'q' in vhost '/': {why}"),
        );
    }
    assert_eq!(
        refusal(&[("x-dead-letter-exchange", AMQPValue::LongInt(1))]),
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'"
    );
    assert!(refusal(&[("x-dead-letter-routing-key", s("k"))])
        .ends_with("routing_key_but_no_dlx_defined"));
    assert!(refusal(&[
        ("x-dead-letter-exchange", s("d")),
        ("x-dead-letter-routing-key", AMQPValue::LongInt(1))
    ])
    .ends_with("{unacceptable_type,signedint}"));
}

#[test]
fn other_types_arguments_are_refused() {
    for k in [
        "x-max-priority",
        "x-queue-mode",
        "x-queue-master-locator",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
    ] {
        assert_eq!(
            refusal(&[(k, s("lazy"))]),
            format!("{PREFIX}'{k}' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue")
        );
    }
}

/// Values are checked in RabbitMQ's fixed order before refused arguments.
#[test]
fn checks_run_in_rabbitmqs_order() {
    let neg = AMQPValue::LongInt(-1);
    assert!(refusal(&[
        ("x-max-length", neg.clone()),
        ("x-message-ttl", neg.clone())
    ])
    .contains("'x-message-ttl'"));
    assert!(refusal(&[
        ("x-overflow", s("nope")),
        ("x-expires", AMQPValue::LongInt(0))
    ])
    .contains("'x-expires'"));
    assert!(refusal(&[
        ("x-max-priority", AMQPValue::LongInt(5)),
        ("x-message-ttl", neg.clone())
    ])
    .contains("'x-message-ttl'"));
    assert!(
        refusal(&[("x-queue-mode", s("lazy")), ("x-max-length", neg)]).contains("'x-max-length'")
    );
    // a field table keeps no wire order: of two refused arguments, the first by name
    assert!(refusal(&[
        ("x-queue-mode", s("lazy")),
        ("x-max-priority", AMQPValue::LongInt(1))
    ])
    .contains("'x-max-priority'"));
}

#[test]
fn capabilities_and_equivalence() {
    let c = Quorum.capabilities();
    assert!(c.basic_get && c.requeue && c.consumer_priority && c.single_active_consumer);
    assert!(c.per_message_ttl && c.dead_lettering && c.server_named);
    assert!(!c.priorities && !c.global_qos && !c.exclusive && !c.non_durable && !c.auto_delete);
    for k in [
        "x-queue-type",
        "x-max-length",
        "x-delivery-limit",
        "x-quorum-initial-group-size",
        "x-queue-leader-locator",
        "x-dead-letter-strategy",
        "x-max-in-memory-length",
        "x-message-ttl",
        "x-single-active-consumer",
    ] {
        assert!(Quorum.equivalence_keys().contains(&k), "{k}");
    }
    assert_eq!(
        global_qos_refused("q", "/").reply_text(),
        "NOT_IMPLEMENTED - queue 'q' in vhost '/' does not support global qos"
    );
}

#[test]
fn registered_by_name() {
    assert!(crate::queue_type::lookup("quorum").is_some());
    assert_eq!(Quorum.name(), "quorum");
}
