//! One peer as this node sees it: the outgoing connection this node dials for its own
//! requests (the peer's replies come back on it, matched by correlation id), redialed
//! with backoff while the peer is away, and its liveness for `/api/nodes`.
//!
//! A request registers its correlation id before its frame is queued, and every way a
//! connection ends clears the registrations, so a request in flight always gets an
//! answer: the reply, `Unreachable` or its timeout.
//!
//! The link's state is its session: `Some(n)` while its n-th connection is up, `None`
//! while down. A connection ends when the peer closes it, when it fails, or when nothing
//! came from the peer for the link timeout (frozen, or cut off with packets dropped:
//! TCP alone would take minutes to notice). The connections the peer dialed to this node
//! are closed with it (`listener.rs`), so the peer sees the loss too and both sides
//! act on it (requeues, cancels) even when only one side noticed first.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::conn::{self, FrameReader, Lane, Lanes, Out};
use super::frame::{self, Frame, Kind, ReplyError};
use super::handshake::{self, PeerHello};
use super::shared::Shared;
use super::tls::Conn;
use super::NetError;
use crate::{node_id, GroupId, NodeId};

pub(crate) struct Link {
    pub name: String,
    pub id: NodeId,
    addr: String,
    /// The open connection's lanes; `None` while down.
    lanes: Mutex<Option<Lanes>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    next_corr: AtomicU64,
    /// Permits = bytes the bulk lane may still queue (kept across reconnects).
    bulk: Arc<Semaphore>,
    /// `Some(n)` while the n-th connection is up (see the module's header).
    session: watch::Sender<Option<u64>>,
    /// Connections opened so far.
    opened: AtomicU64,
    hello: Mutex<Option<PeerHello>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is one map or slot operation: a poisoned lock still
    // holds a consistent value.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes a request's registration however the request ends (answer, timeout, drop).
struct PendingGuard<'a> {
    link: &'a Link,
    corr: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.link.pending).remove(&self.corr);
    }
}

impl Link {
    pub fn new(name: String, addr: String, bulk_bytes: usize) -> Link {
        Link {
            id: node_id(&name),
            name,
            addr,
            lanes: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_corr: AtomicU64::new(1),
            bulk: Arc::new(Semaphore::new(bulk_bytes)),
            session: watch::channel(None).0,
            opened: AtomicU64::new(0),
            hello: Mutex::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.session.borrow().is_some()
    }

    pub fn session(&self) -> Option<u64> {
        *self.session.borrow()
    }

    pub async fn wait_up(&self) -> Result<(), NetError> {
        let mut rx = self.session.subscribe();
        rx.wait_for(|s| s.is_some())
            .await
            .map(|_| ())
            .map_err(|_| NetError::Stopped)
    }

    /// Resolves when a connection of this link that is up now, or that comes up later,
    /// goes down: a connection the peer dialed to this node ends then (it would outlive
    /// a loss the peer must see too). Never resolves while the link stays up or down.
    pub async fn lost(&self) {
        let mut rx = self.session.subscribe();
        let mut seen = *rx.borrow_and_update();
        loop {
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = *rx.borrow_and_update();
            if seen.is_some() && now != seen {
                return;
            }
            seen = now;
        }
    }

    pub fn hello(&self) -> Option<PeerHello> {
        lock(&self.hello).clone()
    }

    pub fn bulk_queued(&self, shared: &Shared) -> usize {
        shared
            .cfg
            .bulk_bytes
            .saturating_sub(self.bulk.available_permits())
    }

    fn unreachable(&self, why: &'static str) -> NetError {
        NetError::Unreachable {
            peer: self.name.clone(),
            why,
        }
    }

    /// Waits for room on the bulk lane (backpressure); the control lane needs none.
    async fn permit(
        &self,
        shared: &Shared,
        lane: Lane,
        size: usize,
    ) -> Result<Option<OwnedSemaphorePermit>, NetError> {
        if size > shared.cfg.max_frame {
            return Err(NetError::TooLarge {
                size,
                max: shared.cfg.max_frame,
            });
        }
        if lane == Lane::Control {
            return Ok(None);
        }
        let n = (size + frame::HEADER_LEN).min(shared.cfg.bulk_bytes) as u32;
        let p = self
            .bulk
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| NetError::Stopped)?;
        Ok(Some(p))
    }

    fn enqueue(&self, lane: Lane, out: Out) -> Result<(), NetError> {
        let lanes = lock(&self.lanes)
            .clone()
            .ok_or_else(|| self.unreachable("not connected"))?;
        if lanes.push(lane, out) {
            Ok(())
        } else {
            Err(self.unreachable("connection closed"))
        }
    }

    /// Sends a request and waits for its reply, all within `timeout`.
    pub async fn request(
        &self,
        shared: &Shared,
        kind: Kind,
        group: GroupId,
        payload: Bytes,
        lane: Lane,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        if !self.is_up() {
            return Err(self.unreachable("not connected"));
        }
        let timed_out = || NetError::Timeout {
            peer: self.name.clone(),
            after: timeout,
        };
        let res = tokio::time::timeout(timeout, async {
            let permit = self.permit(shared, lane, payload.len()).await?;
            let corr = self.next_corr.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            lock(&self.pending).insert(corr, tx);
            let _guard = PendingGuard { link: self, corr };
            let head = frame::header(kind, group, corr, payload.len());
            self.enqueue(lane, Out::new(head, payload, permit))?;
            let reply = rx
                .await
                .map_err(|_| self.unreachable("connection closed"))?;
            match reply.kind {
                Kind::ReplyErr => {
                    let code = ReplyError::from_u8(reply.payload.first().copied().unwrap_or(0));
                    let text = String::from_utf8_lossy(reply.payload.get(1..).unwrap_or_default())
                        .into_owned();
                    Err(NetError::Remote { code, text })
                }
                _ => Ok(reply.payload),
            }
        })
        .await;
        res.unwrap_or_else(|_| Err(timed_out()))
    }

    /// Queues a one-way message on the bulk lane, waiting while the lane is full.
    pub async fn one_way(
        &self,
        shared: &Shared,
        service: u64,
        payload: Bytes,
    ) -> Result<(), NetError> {
        if !self.is_up() {
            return Err(self.unreachable("not connected"));
        }
        let permit = self.permit(shared, Lane::Bulk, payload.len()).await?;
        let head = frame::header(Kind::Send, service, 0, payload.len());
        self.enqueue(Lane::Bulk, Out::new(head, payload, permit))
    }

    /// The connection ended: down, and every request in flight fails.
    pub fn closed(&self) {
        *lock(&self.lanes) = None;
        self.session.send_replace(None);
        lock(&self.pending).clear();
    }

    fn reply(&self, f: Frame) -> std::io::Result<()> {
        match f.kind {
            Kind::Heartbeat => Ok(()),
            Kind::Reply | Kind::ReplyErr => {
                // A reply whose request timed out meanwhile has no one waiting: dropped.
                if let Some(tx) = lock(&self.pending).remove(&f.corr) {
                    let _ = tx.send(f);
                }
                Ok(())
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a request on a dialed connection",
            )),
        }
    }
}

/// Dials `link`'s peer, serves the connection until it ends, and dials again after a
/// backoff (doubling up to the configured longest), until shutdown.
pub(crate) async fn run(shared: Arc<Shared>, link: Arc<Link>) {
    let (first, longest) = shared.cfg.backoff;
    let mut wait = first;
    loop {
        match dial(&shared, &link).await {
            Ok((stream, hello)) => {
                wait = first;
                tracing::info!(peer = %link.name, addr = %link.addr, "cluster link up");
                *lock(&link.hello) = Some(hello);
                match serve(&shared, &link, stream).await {
                    Ok(()) => {
                        tracing::info!(peer = %link.name, "cluster link down: closed by the peer")
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => tracing::warn!(
                        peer = %link.name,
                        "cluster link down: {e} (the peer is frozen, overloaded or cut off)"
                    ),
                    Err(e) => tracing::info!(peer = %link.name, "cluster link down: {e}"),
                }
            }
            Err(e) => {
                if shared.log_limit.allow(&format!("dial {}", link.name)) {
                    tracing::warn!(peer = %link.name, addr = %link.addr, "cannot open the cluster link: {e} (logged once a minute)");
                }
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(longest);
    }
}

async fn dial(shared: &Shared, link: &Link) -> Result<(Conn, PeerHello), String> {
    let limit = shared.cfg.handshake_timeout;
    let attempt = async {
        let s = TcpStream::connect(&link.addr)
            .await
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let refused = |e: String| {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            e
        };
        match &shared.cfg.tls {
            None => {
                let mut s = s;
                let hello = authenticate(shared, &mut s).await.map_err(refused)?;
                Ok::<_, String>((Conn::Plain(s), hello))
            }
            Some(tls) => {
                let mut s = tls.connect(&link.addr, s).await.map_err(refused)?;
                let hello = authenticate(shared, &mut s).await.map_err(refused)?;
                Ok((Conn::Dialed(s), hello))
            }
        }
    };
    let (s, hello) = tokio::time::timeout(limit, attempt)
        .await
        .map_err(|_| format!("no handshake within {limit:?}"))??;
    if hello.name != link.name {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return Err(format!(
            "{} answered as {:?}, not {:?}",
            link.addr, hello.name, link.name
        ));
    }
    Ok((s, hello))
}

/// The secret handshake, as dialer, on a plain or TLS stream.
async fn authenticate<S>(shared: &Shared, s: &mut S) -> Result<PeerHello, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    handshake::dial(s, &shared.cfg.secret, &shared.name, &shared.peer_names)
        .await
        .map_err(|e| match e {
            handshake::HandshakeError::Io(ref io) if shared.cfg.tls.is_none() && eof(io) => {
                format!(
                    "{e} (the peer closed it: it holds another secret, or requires cluster TLS)"
                )
            }
            e => e.to_string(),
        })
}

fn eof(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection of `link` until it ends; the link is down when this returns.
async fn serve(shared: &Shared, link: &Link, stream: Conn) -> std::io::Result<()> {
    let (r, w) = stream.split();
    let (lanes, rx) = conn::lanes();
    *lock(&link.lanes) = Some(lanes);
    let n = link.opened.fetch_add(1, Ordering::Relaxed) + 1;
    link.session.send_replace(Some(n));
    let mut reader = FrameReader::new(r, shared.cfg.max_frame, shared.cfg.link_timeout);
    let read = async {
        while let Some(f) = reader.next().await? {
            link.reply(f)?;
        }
        Ok::<_, std::io::Error>(())
    };
    let res = tokio::select! {
        r = conn::write_loop(w, rx, shared.cfg.heartbeat) => r,
        r = read => r,
    };
    link.closed();
    res
}
