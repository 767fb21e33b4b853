//! Accepts TCP connections and places each on the next worker thread; at shutdown
//! tells every connection to close with 320.

use crate::amqp::connection::{Connection, ForceClose};
use crate::broker::runtime::Runtime;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{error, warn};

/// Accepts connections until the future is dropped; each becomes a [`Connection`]
/// actor on the next worker.
pub async fn accept_loop(listener: TcpListener, rt: Arc<Runtime>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match stream.into_std() {
                Ok(std) => Connection::spawn(std, peer, rt.clone()),
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
