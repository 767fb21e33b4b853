//! The messages the broker sends to actors above it (connections), defined here so that
//! the broker never imports `amqp/`: a queue wakes a paused publisher and an operator
//! closes a connection through a `Recipient` of one of these, whoever handles it.
//! (What a queue sends its consumers is defined with the queue: `queue/consumer.rs`.)

use actix::Message;

/// Something that paused a connection's reading has moved: its channels caught up with
/// the commands handed to them, or a hot queue took its inbox in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResumeRead;

/// Closes a connection from the server side (shutdown, operator, management API).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ForceClose {
    /// The reply text given to the client (after "CONNECTION_FORCED - ").
    pub reason: String,
}
