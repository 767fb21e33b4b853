//! The headers exchange, as RabbitMQ's rabbit_exchange_type_headers: a message goes to the
//! destinations whose binding arguments match its headers; the routing key plays no part.
//!
//! The binding's `x-match` argument chooses `all` (default) or `any`; the `-with-x`
//! variants also compare binding arguments whose names begin with `x-`, which the plain
//! variants ignore. A binding argument of type void matches on presence alone. A bad
//! `x-match` is refused at bind (406).
//!
//! It has no index: a route checks every binding of the set in binding order, and depends
//! on headers, so it is never cached by routing key.

use super::{ExchangeType, RouteInput};
use crate::error::AmqpError;
use crate::routing::{BindingSet, Destination};
use amq_protocol::types::{AMQPValue, FieldTable};

/// The headers type (no index: it routes by the binding set's arguments).
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers;

impl ExchangeType for Headers {
    const NAME: &'static str = "headers";
    const ROUTES_BY_HEADERS: bool = true;

    fn validate_binding(_key: &str, arguments: &FieldTable) -> Result<(), AmqpError> {
        XMatch::from_arguments(arguments).map(|_| ()).map_err(|v| {
            AmqpError::precondition_failed(format!(
                "Invalid x-match field value <<\"{v}\">>; expected all, any, all-with-x, or any-with-x"
            ))
        })
    }

    fn route(&self, set: &BindingSet, msg: &RouteInput<'_>, out: &mut Vec<Destination>) {
        for b in set.all() {
            if matches(&b.arguments, msg.headers) && !out.contains(&b.destination) {
                out.push(b.destination.clone());
            }
        }
    }
}

/// How a headers binding combines its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    /// Every argument must match.
    All,
    /// At least one argument must match.
    Any,
    /// Like `All`, also comparing `x-` arguments.
    AllWithX,
    /// Like `Any`, also comparing `x-` arguments.
    AnyWithX,
}

impl XMatch {
    /// Reads `x-match` from binding arguments; `Err` carries the bad value for a 406.
    pub fn from_arguments(args: &FieldTable) -> Result<XMatch, String> {
        match args.inner().get("x-match") {
            None => Ok(XMatch::All),
            Some(AMQPValue::LongString(s)) => Self::parse(&String::from_utf8_lossy(s.as_bytes())),
            Some(AMQPValue::ShortString(s)) => Self::parse(s.as_str()),
            Some(other) => Err(format!("{other:?}")),
        }
    }

    fn parse(s: &str) -> Result<XMatch, String> {
        match s {
            "all" => Ok(XMatch::All),
            "any" => Ok(XMatch::Any),
            "all-with-x" => Ok(XMatch::AllWithX),
            "any-with-x" => Ok(XMatch::AnyWithX),
            other => Err(other.to_string()),
        }
    }
}

fn same_value(a: &AMQPValue, b: &AMQPValue) -> bool {
    use AMQPValue::*;
    match (a, b) {
        (LongString(x), ShortString(y)) | (ShortString(y), LongString(x)) => {
            x.as_bytes() == y.as_str().as_bytes()
        }
        _ => a == b,
    }
}

/// Whether a message with `headers` matches a binding with `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = XMatch::from_arguments(args).unwrap_or(XMatch::All);
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let any = matches!(mode, XMatch::Any | XMatch::AnyWithX);
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = 0usize;
    for (k, v) in args.inner() {
        if k.as_str() == "x-match" || (!with_x && k.as_str().starts_with("x-")) {
            continue;
        }
        considered += 1;
        let hit = match headers.get(k.as_str()) {
            None => false,
            Some(h) => matches!(v, AMQPValue::Void) || same_value(v, h),
        };
        if any && hit {
            return true;
        }
        if !any && !hit {
            return false;
        }
    }
    // all: everything matched (vacuously true for no arguments); any: nothing matched
    let _ = considered;
    !any
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    use crate::test_support::table;

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn all_and_any() {
        let all = table(&[("x-match", s("all")), ("a", s("1")), ("b", s("2"))]);
        let any = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        let both = table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]);
        let one = table(&[("a", s("1"))]);
        assert!(matches(&all, Some(&both)));
        assert!(!matches(&all, Some(&one)));
        assert!(matches(&any, Some(&one)));
        assert!(!matches(&any, Some(&table(&[("a", s("9"))]))));
        assert!(!matches(&any, None));
        assert!(matches(&table(&[]), None));
    }

    #[test]
    fn with_x_compares_x_arguments() {
        let plain = table(&[("x-match", s("all")), ("x-k", s("v"))]);
        let with_x = table(&[("x-match", s("all-with-x")), ("x-k", s("v"))]);
        let h = table(&[("x-k", s("other"))]);
        assert!(matches(&plain, Some(&h)));
        assert!(!matches(&with_x, Some(&h)));
        let anyx = table(&[("x-match", s("any-with-x")), ("x-k", s("v"))]);
        assert!(matches(&anyx, Some(&table(&[("x-k", s("v"))]))));
    }

    #[test]
    fn void_matches_presence() {
        let b = table(&[("a", AMQPValue::Void)]);
        assert!(matches(&b, Some(&table(&[("a", s("anything"))]))));
        assert!(!matches(&b, Some(&table(&[("b", s("x"))]))));
    }

    #[test]
    fn bad_x_match_is_reported() {
        assert!(XMatch::from_arguments(&table(&[("x-match", s("some"))])).is_err());
    }

    #[test]
    fn bad_x_match_is_refused_at_bind_with_rabbitmq_text() {
        assert_eq!(
            Headers::validate_binding("", &table(&[("x-match", s("some"))]))
                .unwrap_err()
                .reply_text(),
            "PRECONDITION_FAILED - Invalid x-match field value <<\"some\">>; \
             expected all, any, all-with-x, or any-with-x"
        );
        assert!(Headers::validate_binding("", &table(&[("x-match", s("any"))])).is_ok());
        assert!(Headers::validate_binding("", &table(&[])).is_ok());
    }
}
