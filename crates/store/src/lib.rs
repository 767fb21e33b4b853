//! The store behind the traits `broker_core::store` defines (`MessageStore`,
//! `DefinitionStore`): definitions and the message index in one sled database, message
//! records in append-only segment files, and the flusher thread that turns many
//! publishes into one fsync. This is the only crate that depends on sled, so the
//! broker's actors never call it directly (a sled flush on an actor thread stalls every
//! actor on it) and a different store is one crate to write.

pub mod compact;
pub mod dedup;
pub mod flusher;
pub mod index;
pub mod raft;
pub(crate) mod recover;
pub mod replay;
mod replicated;
pub mod segments;
pub mod spill;
pub mod store;
pub mod stream;

pub use flusher::{FlushRequest, Flusher, FLUSH_LATENCY};
pub use store::{SledStore, INDEX_FLUSH};
