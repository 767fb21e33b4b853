//! TLS between nodes: certificates made at run time with rcgen (a cluster CA, node
//! certificates for 127.0.0.1, one from another CA, an expired one, one for another
//! host). Nodes with certificates from the cluster CA talk, with heartbeats and large
//! frames through TLS; every other pairing is refused on both sides, and the links of
//! the good nodes are untouched by it.

use std::time::Duration;

use broker_cluster::net::{NodeTls, Transport};
use broker_cluster::NodeId;
use bytes::Bytes;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

const ECHO: u64 = 1;
/// The link timeout of these tests (heartbeats every fifth of it).
const TIMEOUT: Duration = Duration::from_millis(1000);

/// A CA that signs node certificates.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A node certificate for `hosts` (server and client use, as a node is both), with
    /// this CA as the one it trusts; `expired`: it ended in 2021.
    fn node(&self, name: &str, hosts: &[&str], expired: bool) -> NodeTls {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        NodeTls::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            self.cert.pem().as_bytes(),
        )
        .unwrap()
    }
}

fn fast(name: &str, tls: Option<NodeTls>) -> NetConfig {
    let mut c = config(name, "127.0.0.1:0", b"s");
    c.link_timeout = TIMEOUT;
    c.heartbeat = TIMEOUT / 5;
    c.handshake_timeout = TIMEOUT;
    c.tls = tls;
    c
}

fn echo(nets: &[Transport]) {
    for n in nets {
        n.add_service(
            ECHO,
            Arc::new(|_: NodeId, p: Bytes| async move { Ok::<_, String>(p) }),
        );
    }
}

/// Polls until `check` holds, failing after [`LIMIT`].
async fn until(what: &str, check: impl Fn() -> bool) {
    let t0 = std::time::Instant::now();
    while !check() {
        assert!(t0.elapsed() < LIMIT, "{what} not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn nodes_with_certificates_from_the_cluster_ca_talk() {
    let ca = Ca::new("cluster CA");
    let tls = |n: &str| Some(ca.node(n, &["localhost", "127.0.0.1"], false));
    let nets = start_all(vec![fast("a", tls("a")), fast("b", tls("b"))]).await;
    echo(&nets);
    all_up(&nets).await;
    let (a, b) = (&nets[0], &nets[1]);
    // frames of several TLS records each way, and many small ones in one write round
    let big = Bytes::from(vec![7u8; 3 << 20]);
    assert_eq!(a.call(b.node_id(), ECHO, big.clone()).await.unwrap(), big);
    let calls: Vec<_> = (0..200u32)
        .map(|i| {
            let (b, to) = (b.clone(), a.node_id());
            tokio::spawn(async move { b.call(to, ECHO, Bytes::from(i.to_string())).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap(), Bytes::from(i.to_string()));
    }
    // a quiet link lives on heartbeats through TLS, on the same connection
    let s = a.link_session(b.node_id());
    let t0 = std::time::Instant::now();
    while t0.elapsed() < TIMEOUT * 3 {
        assert_eq!(a.link_session(b.node_id()), s, "the quiet TLS link dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(a.refused_handshakes() + b.refused_handshakes(), 0);
    for n in &nets {
        n.shutdown().await;
    }
}

/// Node x is started beside a and b (cluster CA, TLS): a and b link up, x links with
/// neither, and both sides count refused handshakes.
async fn an_outsider_is_refused(x: impl FnOnce(&Ca) -> NetConfig) {
    let ca = Ca::new("cluster CA");
    let x = x(&ca);
    let tls = |n: &str| Some(ca.node(n, &["localhost", "127.0.0.1"], false));
    let nets = start_all(vec![fast("a", tls("a")), fast("b", tls("b")), x]).await;
    echo(&nets);
    let (a, b, x) = (&nets[0], &nets[1], &nets[2]);
    all_up(&[a.clone(), b.clone()]).await;
    until("refusals on every side", || {
        a.refused_handshakes() >= 2 && b.refused_handshakes() >= 2 && x.refused_handshakes() >= 2
    })
    .await;
    for (p, q) in [(a, x), (b, x), (x, a), (x, b)] {
        assert!(
            !p.is_up(q.node_id()),
            "{} is linked to {}",
            p.name(),
            q.name()
        );
    }
    let r = a.call(b.node_id(), ECHO, Bytes::from_static(b"ok")).await;
    assert_eq!(r.unwrap(), Bytes::from_static(b"ok"));
    for n in &nets {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let other = Ca::new("other CA");
    let x = other.node("x", &["localhost", "127.0.0.1"], false);
    an_outsider_is_refused(|_| fast("x", Some(x))).await;
}

#[tokio::test]
async fn a_node_with_an_expired_certificate_is_refused() {
    // the cluster CA signed it, but it ended in 2021
    an_outsider_is_refused(|ca| fast("x", Some(ca.node("x", &["127.0.0.1"], true)))).await;
}

#[tokio::test]
async fn a_node_without_tls_is_refused() {
    an_outsider_is_refused(|_| fast("x", None)).await;
}

#[tokio::test]
async fn a_certificate_for_another_host_is_refused_by_the_dialer() {
    let ca = Ca::new("cluster CA");
    let good = |n: &str| Some(ca.node(n, &["localhost", "127.0.0.1"], false));
    // b's certificate is from the cluster CA but names another host than the one a
    // dials (127.0.0.1): a refuses it; b's own dials to a pass
    let b = Some(ca.node("b", &["elsewhere.example"], false));
    let nets = start_all(vec![fast("a", good("a")), fast("b", b)]).await;
    let (a, b) = (&nets[0], &nets[1]);
    tokio::time::timeout(LIMIT, b.wait_up(a.node_id()))
        .await
        .unwrap()
        .unwrap();
    until("a refuses b", || a.refused_handshakes() >= 2).await;
    assert!(!a.is_up(b.node_id()));
    for n in &nets {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_frozen_tls_peer_is_declared_down_and_comes_back() {
    // a reaches b through a proxy that stops moving bytes (liveness.rs): TLS records
    // pass it untouched, so a dials 127.0.0.1 and b's certificate names it
    let ca = Ca::new("cluster CA");
    let tls = |n: &str| Some(ca.node(n, &["127.0.0.1"], false));
    let a = Transport::bind(fast("a", tls("a"))).await.unwrap();
    let b = Transport::bind(fast("b", tls("b"))).await.unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let (via, frozen) = super::liveness::proxy(b_addr.to_string()).await;
    let peer = |name: &str, addr: String| broker_cluster::net::PeerAddr {
        name: name.into(),
        addr,
    };
    let a = a.start(vec![peer("b", via)]);
    let b = b.start(vec![peer("a", a_addr.to_string())]);
    echo(&[a.clone(), b.clone()]);
    all_up(&[a.clone(), b.clone()]).await;
    let (ai, bi) = (a.node_id(), b.node_id());
    let sa = a.link_session(bi);
    frozen.send_replace(true);
    let t0 = std::time::Instant::now();
    until("a's link to b down", || !a.is_up(bi)).await;
    assert!(t0.elapsed() >= TIMEOUT / 2, "down after {:?}", t0.elapsed());
    frozen.send_replace(false);
    tokio::time::timeout(LIMIT, a.wait_up(bi))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a.link_session(bi), sa);
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
async fn the_cluster_port_speaks_only_tls_and_drops_the_silent() {
    let ca = Ca::new("cluster CA");
    let tls = Some(ca.node("a", &["127.0.0.1"], false));
    let bound = Transport::bind(fast("a", tls)).await.unwrap();
    let addr = bound.local_addr().unwrap();
    let a = bound.start(Vec::new());
    // a plain hello is closed unanswered
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 0, 0, 12, b'B', b'R', b'K', b'C', 0, 2, 0, 0])
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "answered {n:?}");
    until("the plain hello refused", || a.refused_handshakes() >= 1).await;
    // a connection that says nothing is closed after the handshake time limit
    let mut s = TcpStream::connect(addr).await.unwrap();
    let t0 = std::time::Instant::now();
    let n = tokio::time::timeout(LIMIT, s.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "answered {n:?}");
    assert!(
        t0.elapsed() >= TIMEOUT / 2,
        "closed after {:?}",
        t0.elapsed()
    );
    a.shutdown().await;
}
