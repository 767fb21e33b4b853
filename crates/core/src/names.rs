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

/// Checks that `s` fits an AMQP shortstr (at most 255 bytes): names and routing keys are
/// shortstrs on the wire, so a longer one accepted anywhere (HTTP API, a queue argument)
/// could never be sent to a client. RabbitMQ's management API text.
pub fn check_shortstr(what: &str, s: &str) -> Result<(), AmqpError> {
    if s.len() > MAX_SHORTSTR {
        return Err(AmqpError::precondition_failed(format!(
            "{what} should be less than 255 bytes, actually was {}",
            s.len()
        )));
    }
    Ok(())
}

/// The longest shortstr, in bytes.
pub const MAX_SHORTSTR: usize = 255;

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
        assert!(check_shortstr("queue", &ok).is_ok());
        assert_eq!(
            check_shortstr("queue", &long).unwrap_err().reply_text(),
            "PRECONDITION_FAILED - queue should be less than 255 bytes, actually was 256"
        );
        assert_eq!(shortstr("routing key", &ok).unwrap().as_str(), ok);
        let e = shortstr("routing key", &long).unwrap_err();
        assert_eq!(e.code, crate::ReplyCode::InternalError);
    }
}
