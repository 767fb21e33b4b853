//! The declare rules against RabbitMQ's answers (texts as RabbitMQ 3.13 gives them).

use super::*;
use crate::error::ReplyCode;
use amq_protocol::types::{AMQPValue, LongString, ShortString};

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

fn x(kind: ExchangeKind, args: &FieldTable) -> ExchangeDeclare<'_> {
    ExchangeDeclare {
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: args,
    }
}

fn text(r: Result<(), AmqpError>) -> String {
    r.unwrap_err().reply_text()
}

#[test]
fn exchange_redeclare_compares_type_flags_then_arguments() {
    let none = FieldTable::default();
    let cur = x(ExchangeKind::Topic, &none);
    assert!(check_exchange_equivalent("e", "/", &cur, &cur).is_ok());
    assert_eq!(
        text(check_exchange_equivalent(
            "e",
            "/",
            &cur,
            &x(ExchangeKind::Direct, &none)
        )),
        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'e' in vhost '/': \
         received 'direct' but current is 'topic'"
    );
    let flags = [
        (
            "durable",
            ExchangeDeclare {
                durable: false,
                ..cur
            },
        ),
        (
            "auto_delete",
            ExchangeDeclare {
                auto_delete: true,
                ..cur
            },
        ),
        (
            "internal",
            ExchangeDeclare {
                internal: true,
                ..cur
            },
        ),
    ];
    for (arg, new) in flags {
        let got = text(check_exchange_equivalent("e", "/", &cur, &new));
        assert!(got.contains(&format!("inequivalent arg '{arg}'")), "{got}");
    }
    let ae = table(&[(
        "alternate-exchange",
        AMQPValue::LongString(LongString::from("a")),
    )]);
    let got = text(check_exchange_equivalent(
        "e",
        "/",
        &cur,
        &x(ExchangeKind::Topic, &ae),
    ));
    assert!(
        got.contains("inequivalent arg 'alternate-exchange'"),
        "{got}"
    );
    // arguments RabbitMQ does not compare are not compared
    let other = table(&[("x-other", AMQPValue::LongInt(1))]);
    assert!(check_exchange_equivalent("e", "/", &cur, &x(ExchangeKind::Topic, &other)).is_ok());
}

fn q<'a>(args: &'a FieldTable) -> QueueDeclare<'a> {
    QueueDeclare {
        name: "q",
        vhost: "/",
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: args,
    }
}

#[test]
fn queue_redeclare_checks_exclusive_then_flags_then_the_types_keys() {
    let none = FieldTable::default();
    let cur = q(&none);
    assert!(check_queue_equivalent(&cur, &cur).is_ok());
    let e = check_queue_equivalent(
        &cur,
        &QueueDeclare {
            exclusive: true,
            ..cur
        },
    )
    .unwrap_err();
    assert_eq!(e.code, ReplyCode::ResourceLocked);
    assert!(e
        .reply_text()
        .starts_with("RESOURCE_LOCKED - cannot obtain exclusive access"));
    assert_eq!(
        text(check_queue_equivalent(
            &cur,
            &QueueDeclare {
                durable: false,
                ..cur
            }
        )),
        "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
         received 'false' but current is 'true'"
    );
    let got = text(check_queue_equivalent(
        &cur,
        &QueueDeclare {
            auto_delete: true,
            ..cur
        },
    ));
    assert!(got.contains("inequivalent arg 'auto_delete'"), "{got}");
    // x-queue-type defaults to classic on both sides
    let classic = table(&[(
        "x-queue-type",
        AMQPValue::LongString(LongString::from("classic")),
    )]);
    assert!(check_queue_equivalent(&cur, &q(&classic)).is_ok());
    let ttl = table(&[("x-message-ttl", AMQPValue::LongInt(5))]);
    let got = text(check_queue_equivalent(&cur, &q(&ttl)));
    assert!(
        got.ends_with("received the value '5' of type 'signedint' but current is none"),
        "{got}"
    );
    // a value that would be refused is not checked, only compared
    let custom = table(&[("x-custom", AMQPValue::LongInt(-1))]);
    assert!(check_queue_equivalent(&cur, &q(&custom)).is_ok());
}

#[test]
fn reserved_names() {
    assert_eq!(
        text(check_exchange_declare_name("", true)),
        "ACCESS_REFUSED - operation not permitted on the default exchange"
    );
    assert_eq!(
        text(check_exchange_declare_name("amq.custom", false)),
        "ACCESS_REFUSED - exchange name 'amq.custom' contains reserved prefix 'amq.*'"
    );
    assert!(check_exchange_declare_name("amq.direct", true).is_ok());
    assert!(check_exchange_declare_name("amqx", false).is_ok());
    assert!(check_not_reserved_exchange("amq.direct").is_err());
    assert!(check_not_reserved_exchange("").is_err());
    assert!(check_not_reserved_exchange("x").is_ok());
    assert_eq!(
        text(check_exchange_delete_name("amq.direct", "v")),
        "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost 'v' not allowed"
    );
    assert!(text(check_exchange_delete_name("", "v")).contains("default exchange"));
    assert!(check_exchange_delete_name("x", "v").is_ok());
    assert_eq!(
        text(check_queue_declare_name("amq.q", false)),
        "ACCESS_REFUSED - queue name 'amq.q' contains reserved prefix 'amq.*'"
    );
    assert!(check_queue_declare_name("amq.gen-x", true).is_ok());
    assert!(check_queue_declare_name("", false).is_ok());
    assert!(check_not_default_exchange("x").is_ok());
}
