//! Policy checks, selection and combination, against what RabbitMQ 3.10 answered.

use super::*;
use crate::args::Overflow;
use crate::test_support::table;

fn pol(kind: Kind, name: &str, body: Value) -> Policy {
    Policy::parse(kind, "/", name, &body).unwrap()
}

fn reason(kind: Kind, body: Value) -> String {
    Policy::parse(kind, "/", "p", &body).unwrap_err()
}

#[test]
fn bad_definitions_get_rabbitmq_texts() {
    let d = |def: Value| reason(Kind::Policy, json!({"pattern": "^q", "definition": def}));
    assert_eq!(
        d(json!({"message-ttl": -1})),
        "Validation failed\n\n-1 is not a valid message TTL\n"
    );
    assert_eq!(
        d(json!({"nope": 1, "nah": "x"})),
        "Validation failed\n\n[{<<\"nah\">>,<<\"x\">>},{<<\"nope\">>,1}] are not recognised policy settings\n"
    );
    assert!(d(json!({"max-length": "abc"})).contains("<<\"abc\">> is not a valid maximum length\n"));
    assert!(d(json!({"overflow": "nope"})).contains("is not a valid overflow value"));
    assert!(d(json!({"expires": 0})).contains("0 is not a valid queue expiry"));
    assert!(
        d(json!({"max-length-bytes": 1.5})).contains("1.5 is not a valid maximum length in bytes")
    );
    assert!(d(json!({"max-priority": 5})).contains("are not recognised policy settings"));
    assert_eq!(d(json!({})), "Validation failed\n\nno policy provided\n");
    assert_eq!(
        reason(Kind::Policy, json!({"definition": {"max-length": 1}})),
        "[{key_missing,pattern}]"
    );
    assert!(reason(
        Kind::Policy,
        json!({"pattern": "(", "definition": {"max-length": 1}})
    )
    .starts_with("Validation failed\n\npattern should be regular expression but is invalid"));
    assert!(reason(
        Kind::Policy,
        json!({"pattern": "x", "apply-to": "foo", "definition": {"max-length": 1}})
    )
    .contains("apply-to 'foo' unrecognised"));
    assert!(reason(
        Kind::Operator,
        json!({"pattern": "x", "definition": {"overflow": "reject-publish"}})
    )
    .contains("are not recognised policy settings"));
}

#[test]
fn highest_priority_wins_and_ties_go_to_the_first_name() {
    let ps = [
        pol(
            Kind::Policy,
            "b",
            json!({"pattern": "^q", "definition": {"max-length": 2}, "priority": 5}),
        ),
        pol(
            Kind::Policy,
            "a",
            json!({"pattern": "^q", "definition": {"max-length": 1}, "priority": 5}),
        ),
        pol(
            Kind::Policy,
            "low",
            json!({"pattern": "^q", "definition": {"max-length": 9}}),
        ),
        pol(
            Kind::Policy,
            "x",
            json!({"pattern": "^q", "definition": {"max-length": 9}, "priority": 9, "apply-to": "exchanges"}),
        ),
    ];
    assert_eq!(
        select(&ps, "q1", Target::Queue).map(|p| p.name.as_str()),
        Some("a")
    );
    assert_eq!(
        select(&ps, "q1", Target::Exchange).map(|p| p.name.as_str()),
        Some("x")
    );
    assert!(select(&ps, "other", Target::Queue).is_none());
}

#[test]
fn operator_policy_stricter_value_wins() {
    let p = pol(
        Kind::Policy,
        "p",
        json!({"pattern": ".", "definition": {"max-length": 10, "message-ttl": 5000, "dead-letter-exchange": "dlx"}}),
    );
    let op = pol(
        Kind::Operator,
        "o",
        json!({"pattern": ".", "definition": {"max-length": 4, "message-ttl": 9000, "expires": 60000}}),
    );
    let e = effective_definition(Some(&p), Some(&op));
    assert_eq!(
        Value::Object(e),
        json!({"max-length": 4, "message-ttl": 5000, "dead-letter-exchange": "dlx", "expires": 60000})
    );
}

#[test]
fn declared_arguments_combine_per_key() {
    let declared = table(&[
        ("x-max-length", AMQPValue::LongInt(3)),
        ("x-message-ttl", AMQPValue::LongInt(100_000)),
        ("x-overflow", AMQPValue::LongString("drop-head".into())),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString("mine".into()),
        ),
    ]);
    let eff = json!({"max-length": 10, "message-ttl": 50, "overflow": "reject-publish",
        "dead-letter-exchange": "theirs", "max-length-bytes": 7, "consumer-timeout": 900});
    let Value::Object(eff) = eff else {
        unreachable!()
    };
    let a = queue_args(&declared, &eff, "q", "/").unwrap();
    assert_eq!(a.max_length, Some(3));
    assert_eq!(a.message_ttl, Some(50));
    assert_eq!(a.overflow, Overflow::DropHead);
    assert_eq!(a.dead_letter_exchange.as_deref(), Some("mine"));
    assert_eq!(a.max_length_bytes, Some(7));
    assert_eq!(a.consumer_timeout, Some(900));
}

#[test]
fn a_policy_routing_key_without_any_exchange_is_dropped() {
    let Value::Object(eff) = json!({"dead-letter-routing-key": "k", "max-length": 1}) else {
        unreachable!()
    };
    let a = queue_args(&FieldTable::default(), &eff, "q", "/").unwrap();
    assert_eq!(a.dead_letter_routing_key, None);
    assert_eq!(a.max_length, Some(1));
}

#[test]
fn declared_alternate_exchange_wins() {
    let Value::Object(eff) = json!({"alternate-exchange": "pol"}) else {
        unreachable!()
    };
    assert_eq!(
        alternate_exchange(Some("arg".into()), &eff).as_deref(),
        Some("arg")
    );
    assert_eq!(alternate_exchange(None, &eff).as_deref(), Some("pol"));
}

#[test]
fn delayed_retry_keys_are_checked_and_fill_in_the_declared_arguments() {
    let d = |def: Value| reason(Kind::Policy, json!({"pattern": "^q", "definition": def}));
    assert!(d(json!({"delayed-retry-type": "often"})).contains("is not a valid delayed retry type"));
    assert!(d(json!({"delayed-retry-min": 0})).contains("0 is not a valid delay"));
    assert!(d(json!({"delayed-retry-jitter": 101})).contains("is not a valid jitter percentage"));
    let def =
        json!({"delayed-retry-type": "all", "delayed-retry-min": 100, "delayed-retry-max": 400});
    let a = queue_args(&table(&[]), def.as_object().unwrap(), "q", "/").unwrap();
    let r = a.retry.unwrap();
    assert_eq!((r.min_ms, r.max_ms), (100, Some(400)));
    // a declared minimum over the policy's maximum: the declared arguments hold
    let declared = table(&[("x-delayed-retry-min", AMQPValue::LongInt(1000))]);
    let a = queue_args(&declared, def.as_object().unwrap(), "q", "/").unwrap();
    let r = a.retry.unwrap();
    assert_eq!((r.min_ms, r.max_ms), (1000, None));
}
