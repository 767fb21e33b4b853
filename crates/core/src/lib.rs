//! Broker semantics with no I/O: reply codes, names, exchange types and routing (direct,
//! fanout, topic, headers), queue types and their argument rules, the rules of declares
//! (equivalence, reserved names), policies (which applies, how they combine with
//! arguments), queue state, channel state (delivery tags, acks,
//! confirms), and the flow-control gates shared between threads.
//!
//! Nothing here knows about actix, tokio or sled. The server's actors feed these types
//! with events and carry out what they decide; all of it is tested by plain unit and
//! property tests.

pub mod args;
pub mod auth;
pub mod channel;
pub mod deadletter;
pub mod declare;
pub mod dedup;
pub mod error;
pub mod exchange;
pub mod flow;
pub mod message;
pub mod names;
pub mod policy;
pub mod queue;
pub mod queue_type;
pub mod quorum;
pub mod replicated;
pub mod routing;
pub mod schema;
pub mod store;
pub mod stream;
#[cfg(test)]
mod test_support;

/// Headers matching, at its old path (it lives with the headers exchange type).
pub use exchange::headers;
/// The topic trie, at its old path (it lives with the topic exchange type).
pub use exchange::topic;

pub use error::{AmqpError, ReplyCode};
pub use message::Message;
