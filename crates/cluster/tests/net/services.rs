//! App services beside Raft: calls, one-way messages in order, timeouts, a peer that is
//! down, the bulk lane's bound and the frame limit.

use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use broker_cluster::net::{NetError, ReplyError, Transport, HEADER_LEN};
use broker_cluster::NodeId;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;

const ECHO: u64 = 1;
const NEVER: u64 = 2;
const SINK: u64 = 3;

/// `ECHO` answers "pong:" + the payload and who asked; `NEVER` never answers; `SINK`
/// forwards one-way messages to the returned channel.
fn serve(net: &Transport) -> mpsc::UnboundedReceiver<Bytes> {
    net.add_service(
        ECHO,
        Arc::new(|from: NodeId, p: Bytes| async move {
            Ok(Bytes::from(format!(
                "pong:{}:{from:x}",
                String::from_utf8_lossy(&p)
            )))
        }),
    );
    net.add_service(
        NEVER,
        Arc::new(|_: NodeId, _: Bytes| std::future::pending::<Result<Bytes, String>>()),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    net.add_service(
        SINK,
        Arc::new(move |_: NodeId, p: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(p);
                Ok(Bytes::new())
            }
        }),
    );
    rx
}

#[tokio::test]
async fn calls_and_one_way_messages_round_trip_time_out_and_fail_when_the_peer_is_down() {
    let nets = start_all(vec![
        config("a", "127.0.0.1:0", b"s"),
        config("b", "127.0.0.1:0", b"s"),
    ])
    .await;
    all_up(&nets).await;
    let (a, b) = (&nets[0], &nets[1]);
    let mut sink = serve(b);

    let answer = a
        .call(b.node_id(), ECHO, Bytes::from_static(b"ping"))
        .await
        .unwrap();
    assert_eq!(answer, format!("pong:ping:{:x}", a.node_id()).as_bytes());
    let err = a.call(b.node_id(), 99, Bytes::new()).await.unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Remote {
                code: ReplyError::UnknownService,
                ..
            }
        ),
        "{err:?}"
    );
    let err = a
        .call_timeout(b.node_id(), NEVER, Bytes::new(), Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::Timeout { .. }), "{err:?}");

    for i in 0..100u32 {
        a.send(b.node_id(), SINK, Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(
            sink.recv().await.unwrap(),
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }

    // A call when the peer goes away fails as `Unreachable` without waiting for its time
    // limit (10 s here); so does one made while it is away.
    let pending = tokio::spawn({
        let a = a.clone();
        let b = b.node_id();
        async move { a.call(b, NEVER, Bytes::new()).await }
    });
    b.shutdown().await;
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, NetError::Unreachable { .. }), "{err:?}");
    let err = a.call(b.node_id(), ECHO, Bytes::new()).await.unwrap_err();
    assert!(matches!(err, NetError::Unreachable { .. }), "{err:?}");
    assert!(!a.is_up(b.node_id()));
    a.shutdown().await;
}

#[tokio::test]
async fn a_full_bulk_lane_makes_the_sender_wait_until_it_drains() {
    const SIZE: usize = 64 * 1024;
    let mut small = config("a", "127.0.0.1:0", b"s");
    small.max_frame = SIZE;
    small.bulk_bytes = 4 * (SIZE + HEADER_LEN);
    let nets = start_all(vec![small, config("b", "127.0.0.1:0", b"s")]).await;
    all_up(&nets).await;
    let (a, b) = (&nets[0], &nets[1]);
    let mut sink = serve(b);
    let body = Bytes::from(vec![7u8; SIZE]);

    // This test runs on one thread: the writer cannot drain the lane until this task
    // awaits, so sends complete at once until the bound is reached, and the next waits.
    let mut queued = 0;
    let mut waiting = loop {
        let mut send = Box::pin(a.send(b.node_id(), SINK, body.clone()));
        match poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
            Poll::Ready(r) => {
                r.unwrap();
                queued += 1;
                assert!(queued <= 4, "the bulk lane took more than its bound");
            }
            Poll::Pending => break send,
        }
    };
    assert_eq!(queued, 4);
    assert_eq!(a.bulk_queued(b.node_id()), 4 * (SIZE + HEADER_LEN));
    (&mut waiting).await.unwrap();
    for _ in 0..5 {
        assert_eq!(sink.recv().await.unwrap().len(), SIZE);
    }
    for n in &nets {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_the_connection() {
    let mut strict = config("b", "127.0.0.1:0", b"s");
    strict.max_frame = 64 * 1024;
    let nets = start_all(vec![config("a", "127.0.0.1:0", b"s"), strict]).await;
    all_up(&nets).await;
    let (a, b) = (&nets[0], &nets[1]);
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    b.add_service(
        ECHO,
        Arc::new(move |_: NodeId, p: Bytes| {
            seen.fetch_add(1, Ordering::SeqCst);
            async move { Ok(p) }
        }),
    );

    let err = a
        .call(b.node_id(), ECHO, Bytes::from(vec![0u8; 100 * 1024]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NetError::Unreachable {
                why: "connection closed",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // b refuses to send what it would refuse to receive.
    let err = b
        .call(a.node_id(), ECHO, Bytes::from(vec![0u8; 100 * 1024]))
        .await
        .unwrap_err();
    assert!(matches!(err, NetError::TooLarge { .. }), "{err:?}");

    // The link comes back and carries frames within the limit.
    tokio::time::timeout(LIMIT, a.wait_up(b.node_id()))
        .await
        .unwrap()
        .unwrap();
    let answer = a
        .call(b.node_id(), ECHO, Bytes::from_static(b"small"))
        .await
        .unwrap();
    assert_eq!(&answer[..], b"small");
    for n in &nets {
        n.shutdown().await;
    }
}
