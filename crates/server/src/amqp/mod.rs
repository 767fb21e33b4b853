//! AMQP 0-9-1 over a socket: the listener, connections (frames in and out, the
//! handshake, channel 0), channels (the methods of one channel) and the buffer they
//! share. Everything a method decides is asked of [`crate::broker`]; nothing below this
//! floor imports it.

pub mod channel;
pub mod connection;
pub mod handshake;
pub mod listener;
pub mod shared;
