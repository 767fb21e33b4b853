//! Accepts peers on `--cluster-listen`, authenticates them (`tls.rs` when configured,
//! then `handshake.rs`) and answers their requests on the same connection: Raft RPCs go
//! to the group named in the frame, app messages to their service. Replies take the
//! connection's control lane.
//!
//! Such a connection ends with the peer's (it closes it, or is silent for the link
//! timeout), and also when this node's own link to that peer goes down: a node that
//! lost the peer closes everything it has with it, so that the peer, whose own link
//! then drops, sees the loss as well and acts on it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use tokio::net::{TcpListener, TcpStream};

use super::conn::{self, FrameReader, Lane, Lanes, Out};
use super::frame::{self, Frame, Kind, ReplyError};
use super::handshake::{self, PeerHello};
use super::router::RpcKind;
use super::shared::Shared;
use super::tls::{Conn, ReadHalf};
use crate::{node_id, NodeId};

pub(crate) async fn run(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => shared.spawn(serve(shared.clone(), stream, addr)),
            Err(e) => {
                // Out of descriptors or similar: wait for a peer's retry rather than spin.
                if shared.log_limit.allow("accept") {
                    tracing::warn!("cluster listener cannot accept: {e} (logged once a minute)");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(shared: Arc<Shared>, stream: TcpStream, addr: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let limit = shared.cfg.handshake_timeout;
    let (conn, hello) = match tokio::time::timeout(limit, open(&shared, stream)).await {
        Ok(Ok(c)) => c,
        Ok(Err(Refusal::Gone(e))) => {
            // a dialer that gave up while this node was not accepting (frozen, or
            // busy): nothing was refused
            tracing::debug!(%addr, "a cluster connection closed before its handshake: {e}");
            return;
        }
        Ok(Err(Refusal::Refused(e))) => {
            shared
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if shared.log_limit.allow(&format!("accept {}", addr.ip())) {
                tracing::warn!(%addr, "refused a cluster connection: {e} (logged once a minute per address)");
            }
            return;
        }
        Err(_) => {
            if shared.log_limit.allow(&format!("slow {}", addr.ip())) {
                tracing::info!(%addr, "closed a cluster connection: no handshake within {limit:?} (logged once a minute per address)");
            }
            return;
        }
    };
    let from = node_id(&hello.name);
    shared.heard(&hello.name);
    let (r, w) = conn.split();
    let (lanes, rx) = conn::lanes();
    let reader = FrameReader::new(r, shared.cfg.max_frame, shared.cfg.link_timeout);
    let link = shared.find_link(from);
    let lost = async {
        match &link {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let res = tokio::select! {
        r = conn::write_loop(w, rx, shared.cfg.heartbeat) => r,
        r = dispatch(&shared, from, reader, lanes) => r,
        () = lost => {
            tracing::debug!(peer = %hello.name, "closed the cluster connection from the peer: the link to it went down");
            Ok(())
        }
    };
    if let Err(e) = res {
        if shared.log_limit.allow(&format!("from {}", hello.name)) {
            tracing::warn!(peer = %hello.name, "closed the cluster connection from the peer: {e} (logged once a minute)");
        }
    }
}

/// Why an accepted connection did not open.
enum Refusal {
    /// The dialer closed it before the handshake ended: nothing to report.
    Gone(String),
    /// The dialer failed TLS or the secret handshake.
    Refused(String),
}

/// The TLS handshake (when configured), then the secret handshake as acceptor.
async fn open(shared: &Shared, tcp: TcpStream) -> Result<(Conn, PeerHello), Refusal> {
    match &shared.cfg.tls {
        None => {
            let mut s = tcp;
            let hello = authenticate(shared, &mut s).await?;
            Ok((Conn::Plain(s), hello))
        }
        Some(tls) => {
            let mut s = tls.accept(tcp).await.map_err(|e| {
                if dialer_gone(&e) {
                    Refusal::Gone(e.to_string())
                } else {
                    Refusal::Refused(e.to_string())
                }
            })?;
            let hello = authenticate(shared, &mut s).await?;
            Ok((Conn::Accepted(s), hello))
        }
    }
}

async fn authenticate<S>(shared: &Shared, s: &mut S) -> Result<PeerHello, Refusal>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    handshake::accept(s, &shared.cfg.secret, &shared.name, &shared.peer_names)
        .await
        .map_err(|e| match e {
            handshake::HandshakeError::Io(io) if dialer_gone(&io) => Refusal::Gone(io.to_string()),
            e => Refusal::Refused(e.to_string()),
        })
}

/// Whether a handshake failed because the dialer had already closed the connection.
fn dialer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

async fn dispatch(
    shared: &Arc<Shared>,
    from: NodeId,
    mut reader: FrameReader<ReadHalf>,
    lanes: Lanes,
) -> io::Result<()> {
    while let Some(f) = reader.next().await? {
        match f.kind {
            Kind::Append | Kind::Vote | Kind::Snapshot => raft_rpc(shared, f, &lanes),
            Kind::Heartbeat => {}
            Kind::Call => call(shared, from, f, &lanes),
            Kind::Send => match shared.service(f.group) {
                // Awaited here: one peer's one-way messages are handled in order, and a
                // slow handler stops this reader (TCP backpressure to the sender).
                Some(svc) => {
                    if let Err(e) = svc.handle(from, f.payload).await {
                        tracing::debug!(service = f.group, "one-way cluster message failed: {e}");
                    }
                }
                None => tracing::debug!(
                    service = f.group,
                    "one-way cluster message for an unknown service"
                ),
            },
            Kind::Reply | Kind::ReplyErr => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a reply on an accepted connection",
                ))
            }
        }
    }
    Ok(())
}

fn raft_rpc(shared: &Arc<Shared>, f: Frame, lanes: &Lanes) {
    let kind = match f.kind {
        Kind::Append => RpcKind::Append,
        Kind::Vote => RpcKind::Vote,
        _ => RpcKind::Snapshot,
    };
    let Some(group) = shared.group(f.group) else {
        reply_err(
            lanes,
            f.corr,
            ReplyError::UnknownGroup,
            &format!("no Raft group {} on this node", f.group),
        );
        return;
    };
    let (lanes, max) = (lanes.clone(), shared.cfg.max_frame);
    shared.spawn_request(async move {
        match group.handle(kind, f.payload).await {
            Ok(b) => reply(&lanes, max, f.corr, b),
            Err(e) => reply_err(&lanes, f.corr, ReplyError::Failed, &e),
        }
    });
}

fn call(shared: &Arc<Shared>, from: NodeId, f: Frame, lanes: &Lanes) {
    let Some(svc) = shared.service(f.group) else {
        reply_err(
            lanes,
            f.corr,
            ReplyError::UnknownService,
            &format!("no service {} on this node", f.group),
        );
        return;
    };
    let (lanes, max) = (lanes.clone(), shared.cfg.max_frame);
    shared.spawn_request(async move {
        match svc.handle(from, f.payload).await {
            Ok(b) => reply(&lanes, max, f.corr, b),
            Err(e) => reply_err(&lanes, f.corr, ReplyError::Failed, &e),
        }
    });
}

fn reply(lanes: &Lanes, max: usize, corr: u64, payload: Bytes) {
    if payload.len() > max {
        let text = format!(
            "reply of {} bytes is above the frame limit of {max}",
            payload.len()
        );
        return reply_err(lanes, corr, ReplyError::Failed, &text);
    }
    let head = frame::header(Kind::Reply, 0, corr, payload.len());
    // A closed connection drops the reply: the requester's link fails the request.
    lanes.push(Lane::Control, Out::new(head, payload, None));
}

fn reply_err(lanes: &Lanes, corr: u64, code: ReplyError, text: &str) {
    let mut b = Vec::with_capacity(1 + text.len());
    b.put_u8(code as u8);
    b.put_slice(text.as_bytes());
    let head = frame::header(Kind::ReplyErr, 0, corr, b.len());
    lanes.push(Lane::Control, Out::new(head, Bytes::from(b), None));
}
