//! Accepts TCP connections and places each on the next worker thread; at shutdown
//! tells every connection to close with 320. This is the one place that knows a client
//! came over TCP: it sets the socket's options and hands the connection an
//! [`Accepted`] transport. On the TLS listener that transport's opening step is the TLS
//! handshake (with the configuration current at accept time, see [`crate::tls`]), run on
//! the worker under the connection's handshake timeout: a client that speaks plain AMQP
//! there fails the handshake and its socket is closed, and nothing else is spent on it.
//! An address cooling down for failed logins (`broker/login_throttle.rs`) has its new
//! connections closed here, before a byte is read or a TLS handshake is begun.

use crate::amqp::connection::{Accepted, Connection, ForceClose, Transport};
use crate::broker::runtime::Runtime;
use crate::tls::Reloadable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, warn};

/// Accepts connections until the future is dropped; each becomes a [`Connection`]
/// actor on the next worker. With `tls`, each client is served over TLS.
pub async fn accept_loop(listener: TcpListener, rt: Arc<Runtime>, tls: Option<Arc<Reloadable>>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) if rt.login_throttle.refuses(peer.ip(), Instant::now()) => {
                // cooled down for failed logins: closed before anything is spent on it
                drop(stream);
            }
            Ok((stream, peer)) => match tcp(stream, peer, tls.as_deref()) {
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
fn tcp(stream: TcpStream, peer: SocketAddr, tls: Option<&Reloadable>) -> std::io::Result<Accepted> {
    // a socket that refuses the option still works, only slower
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().ok();
    let std = stream.into_std()?;
    let Some(tls) = tls else {
        return Ok(Accepted::new(peer, false, move || async move {
            let (reader, writer) = TcpStream::from_std(std)?.into_split();
            Ok(Transport::new(reader, writer).with_local(local))
        }));
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    Ok(Accepted::new(peer, true, move || async move {
        let stream = acceptor.accept(TcpStream::from_std(std)?).await?;
        let cn = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(crate::tls::common_name);
        let (reader, writer) = tokio::io::split(stream);
        Ok(Transport::new(reader, writer)
            .with_client_cn(cn)
            .with_local(local))
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
