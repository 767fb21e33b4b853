//! Newtypes for protocol identities, so a channel number is never mistaken for a delivery
//! tag or a queue name for an exchange name.

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
