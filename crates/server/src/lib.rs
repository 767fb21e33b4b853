//! The broker server: actix actors for connections, channels, exchanges and queues, the
//! TCP listener, configuration and startup. See docs/architecture.md for the actor tree
//! and the flows of a message.
//!
//! Three floors, each importing only the ones below it: [`broker`] (vhosts, exchanges,
//! queues, the one publish path, definitions; knows no socket), [`amqp`] (the AMQP
//! listener, connections and channels) and [`http`] (the management API), with
//! [`boot`] starting them in order.

pub mod amqp;
pub mod boot;
pub mod broker;
pub mod config;
pub mod http;
pub mod limits;
pub mod tls;

#[cfg(all(feature = "fault-injection", not(debug_assertions)))]
compile_error!("the fault-injection feature is for test builds only, never a release build");
