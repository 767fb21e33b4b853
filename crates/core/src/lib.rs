//! Broker semantics with no I/O: reply codes, names, routing (direct, fanout, topic,
//! headers), queue state, channel state (delivery tags, acks, confirms).
//!
//! Nothing here knows about actix, tokio or sled. The server's actors feed these types
//! with events and carry out what they decide; all of it is tested by plain unit and
//! property tests.

pub mod args;
pub mod auth;
pub mod channel;
pub mod deadletter;
pub mod error;
pub mod headers;
pub mod message;
pub mod names;
pub mod queue;
pub mod routing;
pub mod store;
pub mod topic;

pub use error::{AmqpError, ReplyCode};
pub use message::Message;
