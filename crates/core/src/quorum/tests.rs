//! Unit tests of the quorum queue state machine, one behaviour each, and the property
//! that replicas fed the same commands agree (effects and exported bytes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use super::*;
use crate::store::encode_message;
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::ShortString;
use bytes::Bytes;

const NODE: u64 = 7;

fn chan(n: u16) -> ChanId {
    ChanId {
        node: NODE,
        connection: 1,
        channel: n,
    }
}

fn cid(ch: u16, tag: &str) -> ConsumerId {
    ConsumerId {
        chan: chan(ch),
        tag: tag.into(),
    }
}

fn encoded(body: &str, expiration: Option<&str>) -> Vec<u8> {
    let mut props = AMQPProperties::default();
    if let Some(e) = expiration {
        props = props.with_expiration(ShortString::from(e));
    }
    let raw = broker_wire::encode::properties(&props);
    encode_message(&Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: props.into(),
        raw_properties: raw,
        body: Bytes::copy_from_slice(body.as_bytes()),
        persist_id: None,
        arrival_ms: 0,
    })
}

struct T {
    s: QqState,
    now: u64,
    seq: u64,
    index: u64,
}

impl T {
    fn new(cfg: QqConfig) -> T {
        T {
            s: QqState::new(cfg),
            now: 1_000,
            seq: 0,
            index: 0,
        }
    }

    fn run(&mut self, op: QqOp) -> (QqResp, Vec<Effect>) {
        self.index += 1;
        self.s.apply(
            self.index,
            &QqCmd {
                ts_ms: self.now,
                op,
            },
        )
    }

    fn publish_on(&mut self, ch: u16, bodies: &[&str]) -> Vec<Effect> {
        let batch = bodies
            .iter()
            .map(|b| {
                self.seq += 1;
                Publish {
                    publisher: chan(ch),
                    seq: self.seq,
                    message: encoded(b, None),
                }
            })
            .collect();
        self.run(QqOp::Enqueue { batch }).1
    }

    fn publish(&mut self, bodies: &[&str]) -> Vec<Effect> {
        self.publish_on(9, bodies)
    }

    fn consume(&mut self, ch: u16, tag: &str, prefetch: u32, priority: i64) -> Vec<Effect> {
        let spec = Checkout::Consume {
            prefetch,
            no_ack: false,
            priority,
            exclusive: false,
        };
        self.run(QqOp::Checkout {
            consumer: cid(ch, tag),
            spec,
        })
        .1
    }

    fn get(&mut self, ch: u16) -> Option<Got> {
        match self.run(QqOp::Checkout {
            consumer: cid(ch, ""),
            spec: Checkout::Get { no_ack: false },
        }) {
            (QqResp::Got(g), _) => g,
            other => panic!("{other:?}"),
        }
    }
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

fn got_body(g: &Got) -> String {
    let m = crate::store::decode_message(&g.message, 0).unwrap();
    body(&m)
}

/// (tag, body, redelivered, delivery count) of each delivery.
fn deliveries(fx: &[Effect]) -> Vec<(String, String, bool, u32)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Deliver {
                consumer,
                message,
                redelivered,
                delivery_count,
                ..
            } => Some((
                consumer.tag.clone(),
                body(message),
                *redelivered,
                *delivery_count,
            )),
            _ => None,
        })
        .collect()
}

fn ids(fx: &[Effect]) -> Vec<MsgId> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Deliver { msg_id, .. } => Some(*msg_id),
            _ => None,
        })
        .collect()
}

fn dead(fx: &[Effect]) -> Vec<(String, &'static str)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::DeadLetter { message, reason } => Some((body(message), reason.as_str())),
            _ => None,
        })
        .collect()
}

fn bodies_of(fx: &[Effect]) -> Vec<String> {
    deliveries(fx).into_iter().map(|d| d.1).collect()
}

#[test]
fn deliveries_in_order_within_the_prefetch_credit() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["a", "b", "c"]);
    let fx = t.consume(1, "c1", 2, 0);
    assert_eq!(bodies_of(&fx), ["a", "b"]);
    let first = ids(&fx)[0];
    let fx = t
        .run(QqOp::Settle {
            channel: chan(1),
            ids: vec![first],
        })
        .1;
    assert_eq!(bodies_of(&fx), ["c"]);
    // a settle from another channel is ignored
    let fx = t
        .run(QqOp::Settle {
            channel: chan(2),
            ids: vec![first + 1],
        })
        .1;
    assert!(fx.is_empty());
    assert_eq!(t.s.unacked_count(), 2);
}

#[test]
fn round_robin_and_consumer_priorities() {
    let mut t = T::new(QqConfig::default());
    t.consume(1, "a", 0, 0);
    t.consume(1, "b", 0, 0);
    let fx = t.publish(&["1", "2", "3", "4"]);
    let tags: Vec<String> = deliveries(&fx).into_iter().map(|d| d.0).collect();
    assert_eq!(tags, ["a", "b", "a", "b"]);

    let mut t = T::new(QqConfig::default());
    t.consume(1, "lo", 1, 0);
    t.consume(1, "hi", 1, 10);
    let fx = t.publish(&["1", "2", "3"]);
    let got: Vec<(String, String)> = deliveries(&fx).into_iter().map(|d| (d.0, d.1)).collect();
    assert_eq!(got, [("hi".into(), "1".into()), ("lo".into(), "2".into())]);
}

#[test]
fn a_return_goes_to_the_back_with_its_delivery_count() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0", "1", "2", "3", "4"]);
    let g: Vec<Got> = (0..3).map(|_| t.get(1).unwrap()).collect();
    assert_eq!(g[0].delivery_count, 0);
    t.run(QqOp::Return {
        channel: chan(1),
        ids: vec![g[1].msg_id, g[0].msg_id],
    });
    let rest: Vec<(String, bool, u32)> = std::iter::from_fn(|| t.get(2))
        .map(|g| (got_body(&g), g.redelivered, g.delivery_count))
        .collect();
    assert_eq!(
        rest,
        [
            ("3".into(), false, 0),
            ("4".into(), false, 0),
            ("1".into(), true, 1),
            ("0".into(), true, 1)
        ]
    );
}

#[test]
fn a_closed_channels_deliveries_go_back_to_their_place() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0", "1", "2", "3"]);
    let fx = t.consume(1, "c", 2, 0);
    assert_eq!(bodies_of(&fx), ["0", "1"]);
    t.run(QqOp::Down(Down::Channel(chan(1))));
    assert_eq!(t.s.consumer_count(), 0);
    let fx = t.consume(2, "d", 0, 0);
    let got = deliveries(&fx);
    assert_eq!(got[0], ("d".into(), "0".into(), true, 1));
    assert_eq!(got[1], ("d".into(), "1".into(), true, 1));
    assert_eq!(got[2], ("d".into(), "2".into(), false, 0));
}

#[test]
fn over_the_delivery_limit_a_message_is_dead_lettered() {
    let mut t = T::new(QqConfig {
        delivery_limit: Some(1),
        ..QqConfig::default()
    });
    t.publish(&["m"]);
    for count in 0..2 {
        let g = t.get(1).unwrap();
        assert_eq!(g.delivery_count, count);
        let fx = t
            .run(QqOp::Return {
                channel: chan(1),
                ids: vec![g.msg_id],
            })
            .1;
        if count == 1 {
            assert_eq!(dead(&fx), [("m".to_string(), "delivery_limit")]);
        } else {
            assert!(dead(&fx).is_empty());
        }
    }
    assert!(t.get(1).is_none());
}

#[test]
fn discard_dead_letters_with_reason_rejected() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["m"]);
    let g = t.get(1).unwrap();
    let fx = t
        .run(QqOp::Discard {
            channel: chan(1),
            ids: vec![g.msg_id],
        })
        .1;
    assert_eq!(dead(&fx), [("m".to_string(), "rejected")]);
    assert_eq!(t.s.unacked_count(), 0);
}

#[test]
fn drop_head_dead_letters_the_oldest() {
    let mut t = T::new(QqConfig {
        max_length: Some(2),
        ..QqConfig::default()
    });
    let fx = t.publish(&["0", "1", "2", "3"]);
    assert_eq!(
        dead(&fx),
        [("0".to_string(), "maxlen"), ("1".to_string(), "maxlen")]
    );
    assert_eq!(t.s.ready_count(), 2);
}

/// As RabbitMQ: the publish that takes the queue over its limit is taken, later ones
/// are rejected until the queue is below 80% of the limit.
#[test]
fn reject_publish_blocks_over_the_limit_until_below_80_percent() {
    let mut t = T::new(QqConfig {
        max_length: Some(2),
        reject_publish: true,
        ..QqConfig::default()
    });
    let fx = t.publish(&["0", "1", "2", "3"]);
    assert!(
        matches!(&fx[..], [Effect::Rejected { publisher, seqs }] if *publisher == chan(9) && seqs == &[4])
    );
    assert_eq!(t.s.ready_count(), 3);
    t.get(1);
    t.get(1);
    assert!(
        matches!(&t.publish(&["x"])[..], [Effect::Rejected { .. }]),
        "1 ready is not below 1.6"
    );
    t.get(1);
    assert!(t.publish(&["y"]).is_empty());
}

#[test]
fn a_retried_enqueue_is_not_applied_twice() {
    let mut t = T::new(QqConfig::default());
    let p = |seq| Publish {
        publisher: chan(3),
        seq,
        message: encoded("m", None),
    };
    t.run(QqOp::Enqueue {
        batch: vec![p(1), p(2)],
    });
    t.run(QqOp::Enqueue {
        batch: vec![p(2), p(3)],
    });
    assert_eq!(t.s.ready_count(), 3);
    // a closed channel's numbers may be used again
    t.run(QqOp::Down(Down::Channel(chan(3))));
    t.run(QqOp::Enqueue { batch: vec![p(1)] });
    assert_eq!(t.s.ready_count(), 4);
}

#[test]
fn ttl_runs_on_the_leaders_clock() {
    let mut t = T::new(QqConfig {
        message_ttl: Some(100),
        ..QqConfig::default()
    });
    t.publish(&["a"]);
    t.now += 100;
    assert!(dead(&t.run(QqOp::Tick).1).is_empty(), "due, not yet past");
    t.now += 1;
    assert_eq!(dead(&t.run(QqOp::Tick).1), [("a".to_string(), "expired")]);
    // per-message TTL from the expiration property
    let batch = vec![Publish {
        publisher: chan(9),
        seq: 100,
        message: encoded("b", Some("10")),
    }];
    t.run(QqOp::Enqueue { batch });
    t.now += 11;
    assert_eq!(dead(&t.run(QqOp::Tick).1), [("b".to_string(), "expired")]);
    // a leader whose clock is behind never moves time backwards
    t.publish_on(5, &["c"]);
    t.now -= 500;
    t.run(QqOp::Tick);
    assert_eq!(t.s.ready_count(), 1);
}

#[test]
fn x_expires_when_unused() {
    let mut t = T::new(QqConfig {
        expires: Some(1000),
        ..QqConfig::default()
    });
    t.run(QqOp::Tick);
    t.consume(1, "c", 0, 0);
    t.now += 5000;
    assert!(!t
        .run(QqOp::Tick)
        .1
        .iter()
        .any(|e| matches!(e, Effect::Expired)));
    t.run(QqOp::Checkout {
        consumer: cid(1, "c"),
        spec: Checkout::Cancel,
    });
    t.now += 999;
    assert!(!t
        .run(QqOp::Tick)
        .1
        .iter()
        .any(|e| matches!(e, Effect::Expired)));
    t.now += 1;
    assert!(t
        .run(QqOp::Tick)
        .1
        .iter()
        .any(|e| matches!(e, Effect::Expired)));
}

#[test]
fn single_active_consumer_takeover() {
    let mut t = T::new(QqConfig {
        single_active_consumer: true,
        ..QqConfig::default()
    });
    t.consume(1, "a", 0, 0);
    t.consume(2, "b", 0, 5);
    let fx = t.publish(&["0", "1"]);
    assert!(deliveries(&fx).iter().all(|d| d.0 == "a"));
    t.run(QqOp::Checkout {
        consumer: cid(1, "a"),
        spec: Checkout::Cancel,
    });
    let fx = t.publish(&["2"]);
    assert_eq!(deliveries(&fx)[0].0, "b");
}

#[test]
fn a_leader_change_returns_deliveries_and_cancels_consumers() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0", "1"]);
    t.consume(1, "c", 1, 0);
    let fx = t.run(QqOp::LeaderChanged).1;
    assert!(
        matches!(&fx[..], [Effect::ConsumerCancelled { consumer, reason: CancelReason::LeaderChanged }] if consumer.tag == "c")
    );
    assert_eq!(t.s.consumer_count(), 0);
    let g = t.get(2).unwrap();
    assert_eq!(
        (got_body(&g).as_str(), g.redelivered, g.delivery_count),
        ("0", true, 0)
    );
    // a late settle of the returned delivery is ignored
    t.run(QqOp::Settle {
        channel: chan(1),
        ids: vec![1],
    });
    assert_eq!(t.s.unacked_count(), 1);
}

#[test]
fn no_ack_consumers_run_on_granted_credit() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0", "1", "2"]);
    let spec = Checkout::Consume {
        prefetch: 2,
        no_ack: true,
        priority: 0,
        exclusive: false,
    };
    let fx = t
        .run(QqOp::Checkout {
            consumer: cid(1, "n"),
            spec,
        })
        .1;
    assert_eq!(bodies_of(&fx), ["0", "1"]);
    assert_eq!(t.s.unacked_count(), 0);
    let fx = t
        .run(QqOp::Credit {
            consumer: cid(1, "n"),
            credit: 5,
        })
        .1;
    assert_eq!(bodies_of(&fx), ["2"]);
}

#[test]
fn purge_and_update_config() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0", "1", "2"]);
    assert_eq!(t.run(QqOp::Purge).0, QqResp::Purged(3));
    t.publish(&["3", "4", "5"]);
    let cfg = QqConfig {
        max_length: Some(1),
        ..QqConfig::default()
    };
    let fx = t.run(QqOp::Configure(cfg)).1;
    assert_eq!(dead(&fx).len(), 2);
}

#[test]
fn export_import_round_trip() {
    let mut t = T::new(QqConfig {
        delivery_limit: Some(3),
        ..QqConfig::default()
    });
    t.publish(&["0", "1", "2", "3"]);
    t.consume(1, "c", 2, 3);
    t.get(2);
    let bytes = t.s.export();
    let mut copy = QqState::import(&bytes).unwrap();
    assert_eq!(copy.export(), bytes);
    let cmd = QqCmd {
        ts_ms: 5000,
        op: QqOp::Return {
            channel: chan(1),
            ids: vec![1, 2],
        },
    };
    let a = t.s.apply(99, &cmd);
    let b = copy.apply(99, &cmd);
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    assert!(QqState::import(b"nonsense").is_err());
}

#[path = "determinism_tests.rs"]
mod determinism;

/// The refusal is in the command's answer too: a publisher on a member node that does
/// not lead (which gets no effects) nacks from it.
#[test]
fn a_refused_enqueue_answers_with_the_refused_publishes() {
    let mut t = T::new(QqConfig {
        max_length: Some(1),
        reject_publish: true,
        ..QqConfig::default()
    });
    let batch = ["0", "1", "2"]
        .iter()
        .enumerate()
        .map(|(i, b)| Publish {
            publisher: chan(9),
            seq: i as u64 + 1,
            message: encoded(b, None),
        })
        .collect();
    let (resp, _) = t.run(QqOp::Enqueue { batch });
    assert_eq!(resp, QqResp::Rejected(vec![(chan(9), vec![3])]));
}

/// A refused publish retried (its answer lost with a leader, the shell proposes it
/// again) is refused again, not skipped as a duplicate and confirmed; a retried stored
/// one is skipped; and the memory of refusals survives a snapshot.
#[test]
fn a_retried_refused_publish_is_refused_again() {
    let mut t = T::new(QqConfig {
        max_length: Some(1),
        reject_publish: true,
        ..QqConfig::default()
    });
    let publish = |seqs: &[u64]| QqOp::Enqueue {
        batch: seqs
            .iter()
            .map(|s| Publish {
                publisher: chan(9),
                seq: *s,
                message: encoded("m", None),
            })
            .collect(),
    };
    let (resp, _) = t.run(publish(&[1, 2, 3]));
    assert_eq!(resp, QqResp::Rejected(vec![(chan(9), vec![3])]));
    let (resp, _) = t.run(publish(&[1, 2, 3]));
    assert_eq!(resp, QqResp::Rejected(vec![(chan(9), vec![3])]));
    assert_eq!(t.s.ready_count(), 2);
    let copy = QqState::import(&t.s.export()).unwrap();
    t.s = copy;
    let (resp, _) = t.run(publish(&[3]));
    assert_eq!(resp, QqResp::Rejected(vec![(chan(9), vec![3])]));
    assert_eq!(t.s.ready_count(), 2);
}

/// A lost node's consumers are cancelled (told, if the node still runs) and what they
/// held comes back, redelivered.
#[test]
fn a_lost_node_cancels_its_consumers_and_returns_their_deliveries() {
    let mut t = T::new(QqConfig::default());
    t.publish(&["0"]);
    t.consume(1, "c", 1, 0);
    let fx = t.run(QqOp::Down(Down::Node(NODE))).1;
    assert!(
        matches!(&fx[..], [Effect::ConsumerCancelled { consumer, reason: CancelReason::NodeDown }] if consumer.tag == "c")
    );
    assert_eq!(t.s.consumer_count(), 0);
    let g = t.get(2).unwrap();
    assert_eq!((got_body(&g).as_str(), g.redelivered), ("0", true));
}
