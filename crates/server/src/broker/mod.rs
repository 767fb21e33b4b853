//! The broker itself, with no socket in sight: vhosts, exchanges and queues (actors),
//! the one publish path used by channels, the HTTP API and dead-lettering, topology
//! changes under per-name locks, users and permissions, definitions and their recovery.
//! It never imports [`crate::amqp`] or [`crate::http`]: what it sends to a channel or a
//! connection is a message defined in [`messages`], which those actors handle.

pub mod access;
pub mod access_apply;
pub mod cluster;
pub mod dedup;
pub mod definitions;
pub mod delayed;
pub mod disk;
pub mod exchange;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod flow;
pub mod locks;
pub mod login_throttle;
pub mod materialize;
pub mod membership;
pub mod memory;
pub mod messages;
pub mod meta;
pub mod node;
pub mod placement;
pub mod policies;
pub mod publish;
pub mod qq_inbound;
pub mod queue;
pub mod remote;
pub mod remote_consume;
pub mod remote_ids;
pub mod remote_quorum;
pub mod runtime;
pub mod schemas;
pub mod shovel;
pub mod super_streams;
pub mod supervise;
pub mod topic_perms;
pub mod topology;
pub mod user_limits;
pub mod vhost;
pub mod worker;

#[cfg(test)]
mod tests;
