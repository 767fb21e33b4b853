//! Liveness of the links: a peer that stops reading and writing but keeps its sockets
//! open (a frozen process, a partition that drops packets) is declared down within the
//! link timeout and comes back when it answers again; a quiet link, and a peer busy in
//! a slow handler, are not.
//!
//! The freeze is a proxy between node a and node b's listener that stops moving bytes
//! (and accepting) while frozen, as the kernel does for a SIGSTOPped process: sockets
//! stay open, nothing is read or written.

use std::time::{Duration, Instant};

use broker_cluster::net::{NetError, PeerAddr, Transport};
use broker_cluster::NodeId;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

const ECHO: u64 = 1;
const SLOW: u64 = 2;
/// The link timeout of these tests (heartbeats every fifth of it).
const TIMEOUT: Duration = Duration::from_millis(1000);

fn fast(name: &str) -> NetConfig {
    let mut c = config(name, "127.0.0.1:0", b"s");
    c.link_timeout = TIMEOUT;
    c.heartbeat = TIMEOUT / 5;
    c.handshake_timeout = TIMEOUT;
    c
}

/// A TCP proxy to `target` that can be frozen: while frozen it neither accepts nor
/// moves a byte, and its sockets stay open.
pub(super) async fn proxy(target: String) -> (String, watch::Sender<bool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (frozen, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            thawed(&rx).await;
            let Ok((c, _)) = l.accept().await else { return };
            thawed(&rx).await;
            let Ok(s) = TcpStream::connect(&target).await else {
                continue;
            };
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            tokio::spawn(pipe(cr, sw, rx.clone()));
            tokio::spawn(pipe(sr, cw, rx.clone()));
        }
    });
    (addr, frozen)
}

async fn thawed(rx: &watch::Receiver<bool>) {
    let _ = rx.clone().wait_for(|f| !*f).await;
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    rx: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        thawed(&rx).await;
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        thawed(&rx).await;
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Node a reaches node b through a freezable proxy; b dials a directly.
async fn through_proxy() -> (Transport, Transport, watch::Sender<bool>) {
    let a = Transport::bind(fast("a")).await.unwrap();
    let b = Transport::bind(fast("b")).await.unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (via, frozen) = proxy(b_addr.to_string()).await;
    let peer = |name: &str, addr: String| PeerAddr {
        name: name.into(),
        addr,
    };
    let a = a.start(vec![peer("b", via)]);
    let b = b.start(vec![peer("a", a_addr.to_string())]);
    for n in [&a, &b] {
        n.add_service(
            ECHO,
            Arc::new(|_: NodeId, p: Bytes| async move { Ok::<_, String>(p) }),
        );
    }
    all_up(&[a.clone(), b.clone()]).await;
    (a, b, frozen)
}

/// Polls `check` every 10 ms until it holds (returns the time it took) or `limit` passes.
async fn within(limit: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let t0 = Instant::now();
    while !check() {
        assert!(t0.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t0.elapsed()
}

/// Fails if `check` stops holding during `span` (looked at every 10 ms).
async fn holds_for(span: Duration, what: &str, check: impl Fn() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < span {
        assert!(check(), "{what} stopped holding after {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_frozen_peer_is_declared_down_within_the_link_timeout_and_comes_back() {
    let (a, b, frozen) = through_proxy().await;
    let (ai, bi) = (a.node_id(), b.node_id());
    let (sa, sb) = (a.link_session(bi), b.link_session(ai));
    assert!(sa.is_some() && sb.is_some());
    // a quiet link stays up on heartbeats alone, with the same connection
    holds_for(TIMEOUT * 3, "the quiet link", || {
        a.link_session(bi) == sa && b.link_session(ai) == sb
    })
    .await;

    frozen.send_replace(true);
    let t0 = Instant::now();
    // a call in flight fails when the link is declared down, not at its own time limit
    let call = a.call_timeout(bi, ECHO, Bytes::from_static(b"x"), TIMEOUT * 20);
    let err = call.await.unwrap_err();
    assert!(matches!(err, NetError::Unreachable { .. }), "{err:?}");
    let took = within(TIMEOUT * 3, "a's link to b down", || !a.is_up(bi)).await;
    let took = took.max(t0.elapsed());
    assert!(
        took >= TIMEOUT - TIMEOUT / 5,
        "declared down after {took:?} only"
    );
    // a closed what b dialed to it, so b saw the loss as well (its session changed)
    within(TIMEOUT * 3, "b's link to a lost", || {
        b.link_session(ai) != sb
    })
    .await;
    // while frozen, a's redials do not get through
    holds_for(TIMEOUT * 2, "a's link to b down", || !a.is_up(bi)).await;

    frozen.send_replace(false);
    tokio::time::timeout(LIMIT, a.wait_up(bi))
        .await
        .unwrap()
        .unwrap();
    let again = a.link_session(bi);
    assert!(again.is_some() && again != sa, "{again:?} after {sa:?}");
    let back = a.call(bi, ECHO, Bytes::from_static(b"y")).await.unwrap();
    assert_eq!(&back[..], b"y");
    tokio::time::timeout(LIMIT, b.wait_up(ai))
        .await
        .unwrap()
        .unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_busy_in_a_slow_one_way_handler_is_not_declared_down() {
    let nets = start_all(vec![fast("a"), fast("b")]).await;
    all_up(&nets).await;
    let (a, b) = (&nets[0], &nets[1]);
    let (started, mut started_rx) = watch::channel(false);
    b.add_service(
        SLOW,
        Arc::new(move |_: NodeId, _: Bytes| {
            let started = started.clone();
            async move {
                started.send_replace(true);
                tokio::time::sleep(TIMEOUT * 3).await;
                Ok::<_, String>(Bytes::new())
            }
        }),
    );
    let s = a.link_session(b.node_id());
    a.send(b.node_id(), SLOW, Bytes::new()).await.unwrap();
    tokio::time::timeout(LIMIT, started_rx.wait_for(|s| *s))
        .await
        .unwrap()
        .unwrap();
    // b's reader of a's connection waits in the handler for three timeouts: neither
    // side may take that for a dead peer
    holds_for(TIMEOUT * 3, "the link while b is busy", || {
        a.link_session(b.node_id()) == s
    })
    .await;
    for n in &nets {
        n.shutdown().await;
    }
}
