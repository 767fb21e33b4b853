//! Races between clients changing the same names at once: declares, deletes and binds of
//! one name happen one after the other, so nothing confirmed is lost and the topology
//! after a restart is what the operations left.

use broker_tests::*;
use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, ExchangeKind};
use std::sync::Arc;
use tokio::sync::Barrier;

fn durable_q() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

async fn declare_durable_topic(ch: &Channel, x: &str) {
    ch.exchange_declare(
        x.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
}

async fn confirmed_publishes(ch: &Channel, exchange: &str, key: &str, n: u32) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        let confirm = ch
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(
            confirm.is_ack(),
            "publish {i} to {exchange}/{key} was nacked"
        );
    }
}

/// The reproduced loss: four connections declare the same new durable queue at the same
/// moment, 100 confirmed persistent messages go to it, and after a clean restart the
/// queue held none (its definition was stored under another store id than the live
/// queue's, and recovery deleted the messages as orphans). Several rounds, so the race
/// is met whatever the scheduling.
#[tokio::test]
async fn concurrent_declares_of_a_new_durable_queue_lose_nothing() {
    let mut b = Broker::start();
    let clients = 4;
    let rounds = 8;
    let mut chans = Vec::new();
    for _ in 0..clients {
        chans.push(b.channel().await);
    }
    let names: Vec<String> = (0..rounds).map(|r| format!("race-q-{r}")).collect();
    for name in &names {
        let barrier = Arc::new(Barrier::new(clients));
        let mut tasks = Vec::new();
        for (_, ch) in &chans {
            let (ch, barrier, name) = (ch.clone(), barrier.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                ch.queue_declare(name.as_str().into(), durable_q(), FieldTable::default())
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (_c, pubch) = b.channel().await;
        confirmed_publishes(&pubch, "", name, 100).await;
    }
    drop(chans);
    b.terminate();
    b.restart();
    let (_c, ch) = b.channel().await;
    for name in &names {
        assert_eq!(
            ready_count(&ch, name).await,
            100,
            "queue {name} after restart"
        );
    }
}

/// Exchanges raced the same way: the second declare's actor replaced the first with its
/// bindings. Four clients declare one durable exchange at once and each binds its own
/// durable queue; every binding routes, before and after a restart.
#[tokio::test]
async fn concurrent_exchange_declares_and_binds_keep_every_binding() {
    let mut b = Broker::start();
    let clients = 4usize;
    for round in 0..6 {
        let x = format!("race-x-{round}");
        let barrier = Arc::new(Barrier::new(clients));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (conn, ch) = b.channel().await;
            let (barrier, x) = (barrier.clone(), x.clone());
            tasks.push(tokio::spawn(async move {
                let q = format!("{x}-q{c}");
                ch.queue_declare(q.as_str().into(), durable_q(), FieldTable::default())
                    .await
                    .unwrap();
                barrier.wait().await;
                declare_durable_topic(&ch, &x).await;
                ch.queue_bind(
                    q.as_str().into(),
                    x.as_str().into(),
                    "k.#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
                drop(conn);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (_c, ch) = b.channel().await;
        confirmed_publishes(&ch, &x, "k.a", 1).await;
        for c in 0..clients {
            assert_eq!(ready_count(&ch, &format!("{x}-q{c}")).await, 1, "{x}-q{c}");
        }
    }
    b.terminate();
    b.restart();
    let (_c, ch) = b.channel().await;
    for round in 0..6 {
        let x = format!("race-x-{round}");
        confirmed_publishes(&ch, &x, "k.b", 1).await;
        for c in 0..clients {
            let q = format!("{x}-q{c}");
            assert_eq!(ready_count(&ch, &q).await, 2, "{q} after restart");
        }
    }
}

/// What one stress client did to the names it owns, to compare with what survives.
#[derive(Default)]
struct Expect {
    /// Durable queues it left declared, with the confirmed messages they must hold.
    queues: Vec<(String, u32)>,
    /// Its binding keys left on the shared exchange (to its witness queue).
    keys: Vec<String>,
}

/// Declares a chaos queue, binds it, and deletes it when `delete`.
async fn chaos_ops(ch: &Channel, q: &str, x: &str, delete: bool) -> Result<(), lapin::Error> {
    ch.queue_declare(q.into(), durable_q(), FieldTable::default())
        .await?;
    ch.queue_bind(
        q.into(),
        x.into(),
        "chaos.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    if delete {
        ch.queue_delete(q.into(), QueueDeleteOptions::default())
            .await?;
    }
    Ok(())
}

/// Many clients at once on shared names: each redeclares the shared durable exchanges,
/// declares, deletes and redeclares queues that every client also declares and deletes
/// (the chaos names), binds and unbinds its own keys on the shared exchange, and
/// publishes confirmed persistent messages to its witness queue through it. After a
/// restart every witness holds exactly its confirmed messages and every shared exchange
/// exactly the bindings the clients left.
#[tokio::test]
async fn declare_delete_bind_publish_storm_then_restart() {
    let mut b = Broker::start();
    let clients = 6;
    let ops = 40;
    let mut tasks = Vec::new();
    let barrier = Arc::new(Barrier::new(clients));
    for c in 0..clients {
        let (conn, ch) = b.channel().await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut expect = Expect::default();
            let witness = format!("storm-w{c}");
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            barrier.wait().await;
            let mut published = 0;
            let mut cc = conn.create_channel().await.unwrap();
            for op in 0..ops {
                let x = format!("storm-x{}", op % 2);
                declare_durable_topic(&ch, &x).await;
                // the chaos names: others delete them at any moment, so a bind may meet
                // a queue that is gone (404 closes that channel: take a new one)
                let chaos = format!("storm-chaos-{}", op % 3);
                if !cc.status().connected() {
                    cc = conn.create_channel().await.unwrap();
                }
                let _ = chaos_ops(&cc, &chaos, &x, op % 4 == 3).await;
                ch.queue_declare(witness.as_str().into(), durable_q(), FieldTable::default())
                    .await
                    .unwrap();
                let key = format!("w{c}.{op}");
                ch.queue_bind(
                    witness.as_str().into(),
                    x.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
                let confirm = ch
                    .basic_publish(
                        x.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        b"w",
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(confirm.is_ack());
                published += 1;
                if op % 2 == 0 {
                    ch.queue_unbind(
                        witness.as_str().into(),
                        x.as_str().into(),
                        key.as_str().into(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                } else {
                    expect.keys.push(format!("{x} {key}"));
                }
            }
            expect.queues.push((witness, published));
            drop(conn);
            expect
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        expected.push(t.await.expect("a storm client failed"));
    }
    b.terminate();
    b.restart();
    let (_c, ch) = b.channel().await;
    for e in &expected {
        for (q, n) in &e.queues {
            assert_eq!(ready_count(&ch, q).await, *n, "{q} after restart");
        }
    }
    // every binding a client left routes to its witness, and the unbound keys do not
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (c, e) in expected.iter().enumerate() {
        let witness = format!("storm-w{c}");
        for op in 0..ops {
            let (x, key) = (format!("storm-x{}", op % 2), format!("w{c}.{op}"));
            ch.basic_publish(
                x.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                b"after",
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
        let want = e.queues[0].1 + e.keys.len() as u32;
        assert_eq!(ready_count(&ch, &witness).await, want, "{witness} bindings");
    }
}
