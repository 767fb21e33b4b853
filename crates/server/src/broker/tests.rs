//! Queue actor tests through a vhost: failure isolation and restart.

use crate::broker::queue::*;
use crate::broker::runtime::Runtime;
use crate::broker::vhost::QueueSpec;
use crate::config::{Cli, Config};
use broker_core::names::ChannelKey;
use broker_core::store::MessageStore;
use broker_core::Message;
use broker_wire::types::FieldTable;
use bytes::Bytes;
use clap::Parser;
use std::sync::Arc;

fn msg() -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: Default::default(),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(b"x"),
        persist_id: None,
        arrival_ms: 0,
    })
}

/// A queue actor that panics is restarted empty at the same address; another queue on
/// the same worker thread is untouched, and the broker goes on.
#[test]
fn a_failing_queue_does_not_take_others_down() {
    let sys = actix::System::new();
    sys.block_on(async {
        let config = Config::load(Cli::parse_from(["broker"])).unwrap();
        let arbiter = actix::Arbiter::new();
        let rt = Runtime::new(config, vec![arbiter.handle()], None).unwrap();
        let v = rt.vhost("/").unwrap();
        let spec = || QueueSpec {
            durable: false,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::default(),
            worker: None,
        };
        let a = v.declare_queue("a", spec(), 1).await.unwrap();
        let b = v.declare_queue("b", spec(), 1).await.unwrap();
        for _ in 0..3 {
            a.enqueue(msg());
            b.enqueue(msg());
        }
        assert_eq!(a.addr.send(Stats::default()).await.unwrap().0, 3);
        a.addr.do_send(Crash);
        // the same address answers again, restarted with an empty state
        let mut restarted = false;
        for _ in 0..100 {
            if let Ok((0, _, _)) = a.addr.send(Stats::default()).await {
                restarted = true;
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(restarted);
        assert_eq!(b.addr.send(Stats::default()).await.unwrap().0, 3);
        a.enqueue(msg());
        assert_eq!(a.addr.send(Stats::default()).await.unwrap().0, 1);
        assert_eq!(rt.message_bytes.used(), 4 * msg().size());
        // deleting a queue releases exactly its bytes
        b.addr
            .send(DeleteQueue {
                if_unused: false,
                if_empty: false,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rt.message_bytes.used(), msg().size());
        arbiter.stop();
    });
}

/// A durable queue whose actor fails takes its persistent messages back from the
/// store at once (transient ones are lost with the actor's memory).
#[test]
fn a_restarted_durable_queue_reloads_its_stored_messages() {
    let dir = std::env::temp_dir().join(format!("queue-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(broker_store::store::SledStore::open(&dir).unwrap());
    let flusher = broker_store::store::Flusher::start(store.clone());
    let cluster =
        crate::broker::cluster::ClusterNode::start("test@localhost", &store, flusher.clone())
            .unwrap();
    let storage = crate::broker::runtime::Storage {
        definitions: store.clone(),
        messages: store.clone(),
        dedup: store.clone(),
        streams: store.streams(),
        flusher,
        cluster,
    };
    let sys = actix::System::new();
    sys.block_on(async {
        let config = Config::load(Cli::parse_from(["broker"])).unwrap();
        let arbiter = actix::Arbiter::new();
        let rt = Runtime::new(config, vec![arbiter.handle()], Some(storage)).unwrap();
        crate::broker::meta::start(&rt).await.unwrap();
        let v = rt.vhost("/").unwrap();
        let spec = QueueSpec {
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: FieldTable::default(),
            worker: None,
        };
        let q = v.declare_queue("d", spec, 1).await.unwrap();
        let qid = q.store_id.unwrap();
        for seq in 100..103u64 {
            let m = Message {
                persist_id: Some(seq),
                ..Arc::try_unwrap(msg()).unwrap()
            };
            let record = broker_core::store::encode_message(&m);
            store.insert(&[qid], seq, &record, m.meta()).unwrap();
            q.enqueue(Arc::new(m));
        }
        q.enqueue(msg());
        assert_eq!(q.addr.send(Stats::default()).await.unwrap().0, 4);
        q.addr.do_send(Crash);
        let mut reloaded = false;
        for _ in 0..100 {
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
            if let Ok((3, _, _)) = q.addr.send(Stats::default()).await {
                reloaded = true;
                break;
            }
        }
        assert!(reloaded, "the three stored messages are back");
        let got = q
            .addr
            .send(Get {
                channel: ChannelKey {
                    connection: 1,
                    channel: 1,
                },
                no_ack: true,
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.1.persist_id, Some(100));
        assert_eq!(&got.1.body[..], b"x");
        arbiter.stop();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
