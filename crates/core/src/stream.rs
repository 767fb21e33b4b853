//! Where a stream consumer starts reading: RabbitMQ's `x-stream-offset` consumer
//! argument (`first`, `last`, `next`, an offset, a timestamp, or an interval such as
//! `1h` meaning that long ago). Without it a consumer starts at `next`.

use crate::error::AmqpError;
use amq_protocol::types::{AMQPValue, FieldTable};

/// A message's `x-stream-filter-value` header (a string), which stream filtering
/// matches consumers' `x-stream-filter` against.
pub fn filter_value(msg: &crate::Message) -> Option<Vec<u8>> {
    match msg
        .properties
        .headers()
        .as_ref()?
        .inner()
        .get("x-stream-filter-value")?
    {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    }
}

/// A consumer's filter: `x-stream-filter` (a string or an array of strings) and
/// `x-stream-match-unfiltered` (also take messages with no filter value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// The values asked for.
    pub values: Vec<Vec<u8>>,
    /// Messages without a filter value match too.
    pub match_unfiltered: bool,
}

impl Filter {
    /// Whether a message with this filter value is delivered.
    pub fn matches(&self, value: Option<&[u8]>) -> bool {
        match value {
            None => self.match_unfiltered,
            Some(v) => self.values.iter().any(|w| w == v),
        }
    }
}

/// Reads a consumer's filter from basic.consume's arguments (`None`: no filter, every
/// message is delivered).
pub fn filter_spec(
    args: &FieldTable,
    queue: &str,
    vhost: &str,
) -> Result<Option<Filter>, AmqpError> {
    let Some(v) = args.inner().get("x-stream-filter") else {
        return Ok(None);
    };
    let bad = |what: &str| {
        AmqpError::precondition_failed(format!(
            "invalid arg '{what}' for queue '{queue}' in vhost '{vhost}': {{unacceptable_type,{}}}",
            crate::args::type_name(v)
        ))
    };
    let one = |x: &AMQPValue| match x {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    };
    let values = match v {
        AMQPValue::FieldArray(a) => a
            .as_slice()
            .iter()
            .map(one)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("x-stream-filter"))?,
        other => vec![one(other).ok_or_else(|| bad("x-stream-filter"))?],
    };
    let match_unfiltered = match args.inner().get("x-stream-match-unfiltered") {
        None => false,
        Some(AMQPValue::Boolean(b)) => *b,
        Some(other) => {
            return Err(AmqpError::precondition_failed(format!(
                "invalid arg 'x-stream-match-unfiltered' for queue '{queue}' in vhost '{vhost}': {{unacceptable_type,{}}}",
                crate::args::type_name(other)
            )))
        }
    };
    Ok(Some(Filter {
        values,
        match_unfiltered,
    }))
}

/// Where to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The oldest message kept.
    First,
    /// The start of the last chunk written.
    Last,
    /// Only messages written from now on.
    Next,
    /// This offset (the oldest kept if it is gone, the end if it is not written yet).
    Offset(u64),
    /// The first chunk written at or after this time (ms since the epoch).
    Timestamp(u64),
}

/// Reads `x-stream-offset` from basic.consume's arguments; `now_ms` turns an interval
/// into a time. A bad value is refused with RabbitMQ's text (which RabbitMQ 3.10 gives
/// for some values and crashes the channel on others).
pub fn offset_spec(
    args: &FieldTable,
    now_ms: u64,
    queue: &str,
    vhost: &str,
) -> Result<OffsetSpec, AmqpError> {
    let Some(v) = args.inner().get("x-stream-offset") else {
        return Ok(OffsetSpec::Next);
    };
    let bad = || {
        AmqpError::precondition_failed(format!(
            "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': \
             {{invalid_stream_offset_arg,{{{},{}}}}}",
            crate::args::type_name(v),
            show(v)
        ))
    };
    match v {
        AMQPValue::LongString(_) | AMQPValue::ByteArray(_) => {
            let s = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
                _ => String::new(),
            };
            match s.as_str() {
                "first" => Ok(OffsetSpec::First),
                "last" => Ok(OffsetSpec::Last),
                "next" => Ok(OffsetSpec::Next),
                other => crate::queue_type::stream::parse_age(other)
                    .map(|age| OffsetSpec::Timestamp(now_ms.saturating_sub(age)))
                    .ok_or_else(bad),
            }
        }
        AMQPValue::Timestamp(secs) => Ok(OffsetSpec::Timestamp(secs.saturating_mul(1000))),
        // a negative offset is the first, as RabbitMQ reads it
        other => match crate::args::int_value(other) {
            Some(n) => Ok(OffsetSpec::Offset(
                u64::try_from(n.max(0)).unwrap_or(u64::MAX),
            )),
            None => Err(bad()),
        },
    }
}

/// A value as Erlang prints it in RabbitMQ's texts.
fn show(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => format!("<<\"{}\">>", String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => format!("<<\"{}\">>", String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::table;
    use amq_protocol::types::LongString;

    fn spec(v: AMQPValue) -> Result<OffsetSpec, AmqpError> {
        offset_spec(&table(&[("x-stream-offset", v)]), 1_000_000, "q", "/")
    }

    #[test]
    fn filters_match_values_and_optionally_unfiltered_messages() {
        let s = |x: &str| AMQPValue::LongString(LongString::from(x));
        assert_eq!(filter_spec(&table(&[]), "q", "/").unwrap(), None);
        let f = filter_spec(&table(&[("x-stream-filter", s("ca"))]), "q", "/")
            .unwrap()
            .unwrap();
        assert!(f.matches(Some(b"ca")) && !f.matches(Some(b"ny")) && !f.matches(None));
        let arr = AMQPValue::FieldArray(vec![s("ca"), s("ny")].into());
        let f = filter_spec(
            &table(&[
                ("x-stream-filter", arr),
                ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
            ]),
            "q",
            "/",
        )
        .unwrap()
        .unwrap();
        assert!(f.matches(Some(b"ny")) && f.matches(None) && !f.matches(Some(b"tx")));
        assert!(filter_spec(
            &table(&[("x-stream-filter", AMQPValue::LongInt(1))]),
            "q",
            "/"
        )
        .unwrap_err()
        .reply_text()
        .ends_with("{unacceptable_type,signedint}"));
    }

    #[test]
    fn every_form_rabbitmq_takes() {
        assert_eq!(
            offset_spec(&table(&[]), 0, "q", "/").unwrap(),
            OffsetSpec::Next
        );
        let s = |x: &str| AMQPValue::LongString(LongString::from(x));
        assert_eq!(spec(s("first")).unwrap(), OffsetSpec::First);
        assert_eq!(spec(s("last")).unwrap(), OffsetSpec::Last);
        assert_eq!(spec(s("next")).unwrap(), OffsetSpec::Next);
        assert_eq!(spec(AMQPValue::LongInt(5)).unwrap(), OffsetSpec::Offset(5));
        assert_eq!(
            spec(AMQPValue::LongLongInt(7)).unwrap(),
            OffsetSpec::Offset(7)
        );
        assert_eq!(
            spec(AMQPValue::Timestamp(100)).unwrap(),
            OffsetSpec::Timestamp(100_000)
        );
        assert_eq!(
            spec(s("10s")).unwrap(),
            OffsetSpec::Timestamp(1_000_000 - 10_000)
        );
        assert_eq!(spec(AMQPValue::LongInt(-1)).unwrap(), OffsetSpec::Offset(0));
        assert_eq!(
            spec(s("abc")).unwrap_err().reply_text(),
            "PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue 'q' in vhost '/': \
             {invalid_stream_offset_arg,{longstr,<<\"abc\">>}}"
        );
        assert!(spec(s("0s")).is_err());
        assert!(spec(AMQPValue::Boolean(true))
            .unwrap_err()
            .reply_text()
            .ends_with("{invalid_stream_offset_arg,{bool,true}}"));
    }
}
