//! Accepts TCP connections and places each on the next worker thread; at shutdown
//! tells every connection to close with 320. This is the one place that knows a client
//! came over TCP: it sets the socket's options and hands the connection an
//! [`Accepted`] transport, so a TLS listener adds its own accept step beside this one.

use crate::amqp::connection::{Accepted, Connection, ForceClose, Transport};
use crate::broker::runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, warn};

/// Accepts connections until the future is dropped; each becomes a [`Connection`]
/// actor on the next worker.
pub async fn accept_loop(listener: TcpListener, rt: Arc<Runtime>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match tcp(stream, peer) {
                Ok(accepted) => Connection::spawn(accepted, rt.clone()),
                Err(e) => warn!("cannot take accepted socket: {e}"),
            },
            Err(e) => {
                // out of file descriptors and the like: back off, keep serving
                error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A TCP client as an [`Accepted`] transport. Nagle is off: the connection already
/// writes in batches, and a lone confirm, heartbeat or delivery must not wait for an ack.
/// The socket leaves this thread's reactor and registers with the worker's when it is
/// opened there, so its readiness is driven by the thread that serves it.
fn tcp(stream: TcpStream, peer: SocketAddr) -> std::io::Result<Accepted> {
    // a socket that refuses the option still works, only slower
    let _ = stream.set_nodelay(true);
    let std = stream.into_std()?;
    Ok(Accepted::new(peer, false, move || async move {
        let (reader, writer) = TcpStream::from_std(std)?.into_split();
        Ok(Transport::new(reader, writer))
    }))
}

/// Sends connection.close 320 to every client and gives them a moment to answer;
/// returns how many connections were told.
pub async fn close_all(rt: &Arc<Runtime>) -> usize {
    let conns: Vec<_> = rt.connections.iter().map(|c| c.value().clone()).collect();
    for c in &conns {
        c.do_send(ForceClose {
            reason: "broker forced connection closure with reason 'shutdown'".into(),
        });
    }
    for _ in 0..20 {
        if rt.connections.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    conns.len()
}
