//! Content-type matching, the validator wrapper and the argument rules.

use super::*;
use amq_protocol::types::{LongString, ShortString};
use serde_json::json;

#[test]
fn json_content_types_are_matched_with_parameters_and_in_any_case() {
    for ct in [
        "application/json",
        "Application/JSON",
        "application/json; charset=utf-8",
        " application/json ;charset=UTF-8",
        "application/vnd.orders.v1+json",
        "application/ld+json; profile=x",
    ] {
        assert!(is_json_content_type(ct), "{ct}");
    }
    for ct in [
        "",
        "text/plain",
        "text/json",
        "application/jsonx",
        "application/+json",
        "application/xml",
        "application/x-json-stream",
        "json",
    ] {
        assert!(!is_json_content_type(ct), "{ct}");
    }
}

fn order_schema() -> CompiledSchema {
    CompiledSchema::compile(&json!({
        "type": "object",
        "required": ["id", "qty"],
        "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}
    }))
    .unwrap()
}

#[test]
fn a_valid_body_passes_and_an_invalid_one_names_the_path() {
    let s = order_schema();
    assert!(s.check_body(br#"{"id":"a","qty":2}"#).is_ok());
    let e = s.check_body(br#"{"id":"a","qty":0}"#).unwrap_err();
    assert!(e.starts_with("/qty: "), "{e}");
    assert!(e.contains("minimum"), "{e}");
    let e = s.check_body(br#"{"id":"a"}"#).unwrap_err();
    assert!(e.contains("\"qty\" is a required property"), "{e}");
}

#[test]
fn a_body_that_is_not_json_fails_and_deep_nesting_is_refused_not_recursed() {
    let s = order_schema();
    let e = s.check_body(b"not json").unwrap_err();
    assert!(e.starts_with("body is not valid JSON"), "{e}");
    let deep = "[".repeat(100_000);
    let e = s.check_body(deep.as_bytes()).unwrap_err();
    assert!(e.contains("recursion limit"), "{e}");
}

#[test]
fn invalid_schemas_and_remote_refs_are_refused_at_compile() {
    let e = CompiledSchema::compile(&json!({"type": "nonsense"})).unwrap_err();
    assert!(!e.is_empty());
    let e = CompiledSchema::compile(&json!({"$ref": "http://example.com/s.json"})).unwrap_err();
    assert!(e.contains("example.com"), "{e}");
    assert!(CompiledSchema::compile(&json!("str")).is_err());
    // references within the document resolve
    let s = CompiledSchema::compile(&json!({
        "$defs": {"pos": {"type": "integer", "minimum": 1}},
        "type": "object", "properties": {"n": {"$ref": "#/$defs/pos"}}
    }))
    .unwrap();
    assert!(s.check_body(br#"{"n":1}"#).is_ok());
    assert!(s.check_body(br#"{"n":0}"#).is_err());
}

#[test]
fn errors_are_bounded_at_a_char_boundary() {
    let s = CompiledSchema::compile(&json!({"type": "integer"})).unwrap();
    let big = format!("\"{}\"", "é".repeat(5000));
    let e = s.check_body(big.as_bytes()).unwrap_err();
    assert!(e.len() <= MAX_ERROR_BYTES, "{}", e.len());
    assert!(e.ends_with('…'));
    assert_eq!(bounded("short".into(), 10), "short");
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert(ShortString::from(*k), v.clone());
    }
    t
}

#[test]
fn arguments_win_over_policy_keys() {
    let policy =
        json!({"schema": "p", "schema-invalid-exchange": "pi", "schema-require-json": true});
    let policy = policy.as_object().unwrap();
    let none = SchemaSettings::resolve(&FieldTable::default(), policy);
    assert_eq!(none.name.as_deref(), Some("p"));
    assert_eq!(none.invalid_exchange.as_deref(), Some("pi"));
    assert!(none.require_json);
    let args = table(&[
        ("x-schema", AMQPValue::LongString(LongString::from("a"))),
        ("x-schema-require-json", AMQPValue::Boolean(false)),
    ]);
    let s = SchemaSettings::resolve(&args, policy);
    assert_eq!(s.name.as_deref(), Some("a"));
    assert_eq!(s.invalid_exchange.as_deref(), Some("pi"));
    assert!(!s.require_json);
    assert_eq!(
        SchemaSettings::resolve(&FieldTable::default(), &Map::new()),
        SchemaSettings::default()
    );
}

#[test]
fn bad_argument_types_are_refused_with_406() {
    let e = check_args(&table(&[("x-schema", AMQPValue::LongInt(1))]), "x", "/").unwrap_err();
    assert_eq!(
        e.reply_text(),
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-schema' in exchange 'x' in vhost '/'"
    );
    let e = check_args(
        &table(&[("x-schema-require-json", AMQPValue::LongString("yes".into()))]),
        "x",
        "/",
    )
    .unwrap_err();
    assert!(e
        .reply_text()
        .contains("invalid type 'longstr' for arg 'x-schema-require-json'"));
    let e = check_args(
        &table(&[(
            "x-schema-invalid-exchange",
            AMQPValue::LongString("".into()),
        )]),
        "x",
        "/",
    )
    .unwrap_err();
    assert!(e.reply_text().contains("a name of 1 to 255 bytes"));
    assert!(check_args(
        &table(&[
            ("x-schema", AMQPValue::LongString("s".into())),
            ("x-schema-require-json", AMQPValue::Boolean(true)),
        ]),
        "x",
        "/"
    )
    .is_ok());
}
