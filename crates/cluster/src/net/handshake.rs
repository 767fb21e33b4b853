//! The handshake that opens every cluster connection, before any frame: both sides prove
//! they hold the shared secret without sending it, and say who they are and which peers
//! they were configured with (step 4 refuses to bootstrap when the sets differ).
//!
//! ```text
//! dialer → acceptor   hello_d = "BRKC" | version u16 | name | nonce[32] | peers (sorted)
//! acceptor → dialer   hello_a (the same shape, its own nonce)
//! dialer → acceptor   HMAC-SHA256(secret, "BRKC" | 'D' | hello_d | hello_a)
//! acceptor → dialer   HMAC-SHA256(secret, "BRKC" | 'A' | hello_d | hello_a)
//! ```
//!
//! Every message is `len u32 | bytes`. The MAC covers both whole hellos (both nonces,
//! both names, both peer sets), so nothing a peer said is unauthenticated; the role byte
//! keeps a proof from being reflected back. Proofs are checked with the `hmac` crate's
//! constant-time `verify_slice`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

/// The hello's first bytes (`tls.rs` tells a plain dialer apart by them).
pub(crate) const MAGIC: &[u8; 4] = b"BRKC";
/// 2: heartbeat frames (a node of version 1 would close the connection at the first).
const VERSION: u16 = 2;
/// The largest hello or proof accepted: a name and a peer list, never more.
const MAX_MSG: usize = 64 * 1024;

/// What the other side of a connection said in its hello (authenticated by the MAC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    /// Its node name.
    pub name: String,
    /// The peer names it was configured with, sorted (without its own name).
    pub peers: Vec<String>,
}

/// Why a handshake failed; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The socket failed or closed (a peer with another secret closes after our proof).
    #[error("connection lost during the handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The peer's proof does not match: it holds another secret.
    #[error("the peer's proof does not match: the cluster secrets differ")]
    BadProof,
    /// The peer speaks something else, or another version of this handshake.
    #[error("handshake refused: {0}")]
    Protocol(String),
}

/// This side's hello, encoded once.
struct Hello {
    bytes: Vec<u8>,
}

impl Hello {
    fn new(name: &str, peers: &[String]) -> Hello {
        let mut nonce = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut b = Vec::with_capacity(64 + name.len());
        b.put_slice(MAGIC);
        b.put_u16(VERSION);
        put_str(&mut b, name);
        b.put_slice(&nonce);
        b.put_u16(peers.len() as u16);
        for p in peers {
            put_str(&mut b, p);
        }
        Hello { bytes: b }
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    // Names are bounded by MAX_MSG on the reading side; longer ones fail there.
    b.put_u16(s.len().min(u16::MAX as usize) as u16);
    b.put_slice(&s.as_bytes()[..s.len().min(u16::MAX as usize)]);
}

fn get_str(b: &mut &[u8]) -> Result<String, HandshakeError> {
    if b.remaining() < 2 {
        return Err(HandshakeError::Protocol("truncated hello".into()));
    }
    let n = b.get_u16() as usize;
    if b.remaining() < n {
        return Err(HandshakeError::Protocol("truncated hello".into()));
    }
    let s = String::from_utf8(b[..n].to_vec())
        .map_err(|_| HandshakeError::Protocol("name not UTF-8".into()))?;
    b.advance(n);
    Ok(s)
}

fn parse_hello(mut b: &[u8]) -> Result<PeerHello, HandshakeError> {
    if b.len() < 6 || &b[..4] != MAGIC {
        return Err(HandshakeError::Protocol(
            "not a cluster node (bad magic)".into(),
        ));
    }
    b.advance(4);
    let version = b.get_u16();
    if version != VERSION {
        return Err(HandshakeError::Protocol(format!(
            "version {version}, this node speaks {VERSION}"
        )));
    }
    let name = get_str(&mut b)?;
    if b.remaining() < 34 {
        return Err(HandshakeError::Protocol("truncated hello".into()));
    }
    b.advance(32);
    let n = b.get_u16();
    let peers = (0..n)
        .map(|_| get_str(&mut b))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PeerHello { name, peers })
}

fn mac(
    secret: &[u8],
    role: u8,
    dialer: &[u8],
    acceptor: &[u8],
) -> Result<HmacSha256, HandshakeError> {
    let mut m = HmacSha256::new_from_slice(secret)
        .map_err(|_| HandshakeError::Protocol("unusable secret".into()))?;
    m.update(MAGIC);
    m.update(&[role]);
    m.update(&(dialer.len() as u32).to_be_bytes());
    m.update(dialer);
    m.update(acceptor);
    Ok(m)
}

async fn write_msg<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
    s.write_all(&out).await?;
    s.flush().await
}

async fn read_msg<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, HandshakeError> {
    let n = s.read_u32().await? as usize;
    // A TLS record starts 0x16 (handshake) 0x03 (version): a peer with cluster TLS
    // dialing this node, which has none.
    if n >> 16 == 0x1603 {
        return Err(HandshakeError::Protocol(
            "the peer speaks TLS, and this node has no cluster TLS configured".into(),
        ));
    }
    if n > MAX_MSG {
        return Err(HandshakeError::Protocol(format!(
            "handshake message of {n} bytes"
        )));
    }
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).await?;
    Ok(b)
}

/// The dialing side: returns what the acceptor said once both proofs matched.
pub async fn dial<S>(
    s: &mut S,
    secret: &[u8],
    name: &str,
    peers: &[String],
) -> Result<PeerHello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mine = Hello::new(name, peers);
    write_msg(s, &mine.bytes).await?;
    let theirs = read_msg(s).await?;
    let said = parse_hello(&theirs)?;
    let proof = mac(secret, b'D', &mine.bytes, &theirs)?
        .finalize()
        .into_bytes();
    write_msg(s, &proof).await?;
    let answer = read_msg(s).await?;
    mac(secret, b'A', &mine.bytes, &theirs)?
        .verify_slice(&answer)
        .map_err(|_| HandshakeError::BadProof)?;
    Ok(said)
}

/// The accepting side: checks the dialer's proof before proving itself, so a node
/// without the secret learns nothing but our hello.
pub async fn accept<S>(
    s: &mut S,
    secret: &[u8],
    name: &str,
    peers: &[String],
) -> Result<PeerHello, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let theirs = read_msg(s).await?;
    let said = parse_hello(&theirs)?;
    let mine = Hello::new(name, peers);
    write_msg(s, &mine.bytes).await?;
    let proof = read_msg(s).await?;
    mac(secret, b'D', &theirs, &mine.bytes)?
        .verify_slice(&proof)
        .map_err(|_| HandshakeError::BadProof)?;
    let answer = mac(secret, b'A', &theirs, &mine.bytes)?
        .finalize()
        .into_bytes();
    write_msg(s, &answer).await?;
    Ok(said)
}

/// Lets one log line through per key per minute: a peer with the wrong secret retries
/// every few seconds, and one line a minute says all there is to say.
#[derive(Default)]
pub struct LogLimiter {
    last: Mutex<HashMap<String, Instant>>,
}

impl LogLimiter {
    /// Whether a line about `key` may be logged now (and records that it was).
    pub fn allow(&self, key: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match last.get(key) {
            Some(t) if now.duration_since(*t) < Duration::from_secs(60) => false,
            _ => {
                last.insert(key.to_string(), now);
                true
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test fails by panicking
mod tests {
    use super::*;

    async fn pair(
        a_secret: &'static [u8],
        b_secret: &'static [u8],
    ) -> (
        Result<PeerHello, HandshakeError>,
        Result<PeerHello, HandshakeError>,
    ) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let peers_a = vec!["b".to_string()];
        let peers_b = vec!["a".to_string(), "c".to_string()];
        let da = tokio::spawn(async move { dial(&mut a, a_secret, "a", &peers_a).await });
        let acc = accept(&mut b, b_secret, "b", &peers_b).await;
        drop(b);
        (da.await.unwrap(), acc)
    }

    #[tokio::test]
    async fn same_secret_both_sides_learn_the_other() {
        let (d, a) = pair(b"s3cret", b"s3cret").await;
        assert_eq!(
            d.unwrap(),
            PeerHello {
                name: "b".into(),
                peers: vec!["a".into(), "c".into()]
            }
        );
        assert_eq!(
            a.unwrap(),
            PeerHello {
                name: "a".into(),
                peers: vec!["b".into()]
            }
        );
    }

    #[tokio::test]
    async fn other_secret_is_refused_by_the_acceptor_first() {
        let (d, a) = pair(b"s3cret", b"other").await;
        assert!(matches!(a, Err(HandshakeError::BadProof)), "{a:?}");
        assert!(matches!(d, Err(HandshakeError::Io(_))), "{d:?}");
    }

    #[test]
    fn limiter_allows_one_line_per_key_per_minute() {
        let l = LogLimiter::default();
        assert!(l.allow("a"));
        assert!(!l.allow("a"));
        assert!(l.allow("b"));
    }
}
