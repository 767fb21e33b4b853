//! What a connection reads and writes through. Only the listener knows whether a client
//! came over TCP or TLS; the connection sees two byte-stream halves behind
//! `AsyncRead`/`AsyncWrite`, so TLS (or an in-memory pipe in tests) slots in without
//! touching it. Each read or write costs one virtual call, next to a syscall.
//!
//! A socket is accepted on the listener's thread but served on a worker thread, and its
//! readiness must be driven by the worker's reactor: so the listener hands over an
//! [`Accepted`], whose opening step (registering the socket, later a TLS handshake) runs on
//! the worker, inside the connection actor, under its handshake timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// The half a connection reads from.
pub type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The half a connection writes to.
pub type Writer = Box<dyn AsyncWrite + Send + Unpin>;
/// The opening step of an [`Accepted`] client, run on the connection's worker thread.
pub type Opening = Pin<Box<dyn Future<Output = io::Result<Transport>>>>;

/// An open byte stream to a client, in two halves: the connection reads one while a write
/// to the other is under way.
pub struct Transport {
    /// Where the connection reads frames from.
    pub reader: Reader,
    /// Where the connection writes its buffered frames to.
    pub writer: Writer,
    /// The common name of the client's verified TLS certificate, if it presented one
    /// (only the TLS listener with `--tls-verify-peer` asks for one): the user SASL
    /// EXTERNAL logs in as.
    pub client_cn: Option<String>,
    /// The listener's address the client connected to (the connection's name in the
    /// management API: `peer -> local`).
    pub local: Option<SocketAddr>,
}

impl Transport {
    /// A transport of two halves (a TCP socket's `into_split`, `tokio::io::split` of a TLS
    /// stream or of an in-memory duplex).
    pub fn new(
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Self {
        Self {
            reader: Box::new(reader),
            writer: Box::new(writer),
            client_cn: None,
            local: None,
        }
    }

    /// The same transport, naming the local address the client connected to.
    pub fn with_local(mut self, local: Option<SocketAddr>) -> Self {
        self.local = local;
        self
    }

    /// The same transport, carrying the client certificate's common name.
    pub fn with_client_cn(mut self, cn: Option<String>) -> Self {
        self.client_cn = cn;
        self
    }
}

/// A client the listener accepted, not yet open: what the listener knows of it (peer,
/// whether it is TLS) and how to open it on the worker that will serve it.
pub struct Accepted {
    /// The client's address (logs, the guest-from-loopback rule, the management API).
    pub peer: SocketAddr,
    /// Whether the client came through the TLS listener.
    pub tls: bool,
    open: Box<dyn FnOnce() -> Opening + Send>,
}

impl Accepted {
    /// A client whose transport `open` builds on the worker thread: `open` itself is sent
    /// there, the future it returns never leaves it.
    pub fn new<F, Fut>(peer: SocketAddr, tls: bool, open: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = io::Result<Transport>> + 'static,
    {
        Self {
            peer,
            tls,
            open: Box::new(move || Box::pin(open())),
        }
    }

    /// A client whose transport is already open (an in-memory pipe in tests).
    pub fn ready(peer: SocketAddr, tls: bool, transport: Transport) -> Self {
        Self::new(peer, tls, move || std::future::ready(Ok(transport)))
    }

    /// Starts opening; call on the worker thread that serves the client.
    pub(super) fn open(self) -> Opening {
        (self.open)()
    }
}
