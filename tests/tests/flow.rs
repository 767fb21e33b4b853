//! Backpressure: over the memory high watermark, publishers are blocked (connection.blocked
//! for clients that understand it, and their socket is no longer read) until consumers
//! drain the queues; nothing is lost.

use broker_tests::*;
use futures::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use std::time::Duration;

#[tokio::test]
async fn publishers_are_blocked_over_the_memory_watermark_and_resume() {
    let b = Broker::start_with(&["--memory-high-watermark", "1000000"]);
    let (_pc, publisher) = b.channel().await;
    let q = unique("flow");
    publisher
        .queue_declare(
            q.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let total = 3000u32;
    let body = vec![7u8; 1024];
    let qn = q.clone();
    let pubtask = tokio::spawn(async move {
        for i in 0..total {
            let mut b = body.clone();
            b[..4].copy_from_slice(&i.to_be_bytes());
            publisher
                .basic_publish(
                    "".into(),
                    qn.as_str().into(),
                    BasicPublishOptions::default(),
                    &b,
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
        publisher
    });
    let (_oc, observer) = b.channel().await;
    let depth = |o: lapin::Channel, q: String| async move {
        o.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
    };
    // the queue stops growing near the watermark: ~1 MB of 1 KiB messages, plus what was
    // already on the wire when the alarm went off
    let mut last = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = depth(observer.clone(), q.clone()).await;
        if d == last && d > 0 {
            break;
        }
        last = d;
    }
    let held = depth(observer.clone(), q.clone()).await;
    assert!(
        held < total,
        "publisher was never blocked: {held} messages queued"
    );
    assert!(held >= 900, "blocked too early: {held}");
    assert!(!pubtask.is_finished());
    // a consumer drains; the publisher resumes; every message arrives once, in order
    let (_cc, cch) = b.channel().await;
    let mut consumer = cch
        .basic_consume(
            q.as_str().into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..total {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("stalled")
            .unwrap()
            .unwrap();
        assert_eq!(u32::from_be_bytes(d.data[..4].try_into().unwrap()), i);
    }
    tokio::time::timeout(Duration::from_secs(10), pubtask)
        .await
        .expect("publisher still blocked")
        .unwrap();
}
