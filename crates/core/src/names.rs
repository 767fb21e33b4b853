//! Newtypes for protocol identities, so a channel number is never mistaken for a delivery
//! tag or a queue name for an exchange name, and the checked conversion to a shortstr that
//! every server path uses instead of the panicking `ShortString::from`.

use crate::error::AmqpError;
use amq_protocol::types::ShortString;
use std::fmt;
use std::sync::Arc;

/// A channel number on one connection (1..=channel_max).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u16);

/// A delivery tag, unique per channel, starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryTag(pub u64);

/// A broker-wide identity for one open channel (connection id and channel number), used by
/// queues to know which deliveries to requeue when a channel goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelKey {
    /// Connection number, unique for the broker's lifetime.
    pub connection: u64,
    /// Channel number on that connection.
    pub channel: u16,
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Arc<str>);

        impl $name {
            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(Arc::from(s))
            }
        }
    };
}

name_type!(
    /// The name of a queue within a vhost.
    QueueName
);
name_type!(
    /// The name of an exchange within a vhost ("" is the default exchange).
    ExchangeName
);
name_type!(
    /// A consumer tag, unique per channel.
    ConsumerTag
);

/// The longest AMQP short string, in bytes.
pub const MAX_SHORTSTR: usize = 255;

/// Refuses `s` (406 PRECONDITION_FAILED) when it cannot travel as an AMQP short string:
/// names, routing keys and arguments that later go out in one are refused where they
/// come in, since encoding them later would fail (or panic) far from the cause.
pub fn check_shortstr(what: &str, s: &str) -> Result<(), AmqpError> {
    if s.len() > MAX_SHORTSTR {
        return Err(AmqpError::precondition_failed(format!(
            "{what} is {} bytes long; the most is {MAX_SHORTSTR}",
            s.len()
        )));
    }
    Ok(())
}

/// `s` as a shortstr for a method the broker sends, or 541 INTERNAL_ERROR when it does not
/// fit. `ShortString::from` panics on a longer string; this never does, and never
/// truncates (a truncated name would name something else).
pub fn shortstr(what: &str, s: &str) -> Result<ShortString, AmqpError> {
    ShortString::try_new(s).map_err(|_| {
        AmqpError::internal(format!(
            "{what} of {} bytes cannot be sent as a shortstr",
            s.len()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortstr_limits_are_checked_not_panicked() {
        let ok = "k".repeat(255);
        let long = "k".repeat(256);
        assert!(check_shortstr("queue name", &ok).is_ok());
        let e = check_shortstr("queue name", &long).unwrap_err();
        assert_eq!(e.code, crate::ReplyCode::PreconditionFailed);
        assert!(e.text.contains("queue name is 256 bytes"), "{}", e.text);
        // bytes, not characters
        assert!(check_shortstr("key", &"é".repeat(128)).is_err());
        assert_eq!(shortstr("routing key", &ok).unwrap().as_str(), ok);
        let e = shortstr("routing key", &long).unwrap_err();
        assert_eq!(e.code, crate::ReplyCode::InternalError);
    }
}
