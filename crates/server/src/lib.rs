//! The broker server: actix actors for connections, channels, exchanges and queues, the
//! TCP listener, configuration and startup. See docs/architecture.md for the actor tree
//! and the flows of a message.

pub mod access;
pub mod channel;
pub mod config;
pub mod connection;
pub mod exchange;
pub mod flow;
pub mod handshake;
pub mod http;
pub mod listener;
pub mod locks;
pub mod persist;
pub mod publish;
pub mod queue;
pub mod runtime;
pub mod shared;
pub mod topology;
pub mod vhost;
