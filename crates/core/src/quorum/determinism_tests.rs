//! The property that replicas agree: two states fed the same random commands decide the
//! same effects and export the same bytes, and a state imported from a snapshot goes on
//! exactly as the one it was taken of.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use super::*;
use proptest::prelude::*;

fn op_strategy() -> impl Strategy<Value = QqOp> {
    let ch = 1u16..4;
    prop_oneof![
        (ch.clone(), 1u64..20, 1usize..4).prop_map(|(c, seq, n)| QqOp::Enqueue {
            batch: (0..n as u64)
                .map(|i| Publish {
                    publisher: chan(c),
                    seq: seq + i,
                    message: encoded(&format!("m{seq}-{i}"), (i == 1).then_some("50")),
                })
                .collect()
        }),
        (ch.clone(), 0u32..3, -1i64..2, any::<bool>()).prop_map(
            |(c, prefetch, priority, no_ack)| {
                QqOp::Checkout {
                    consumer: cid(c, "t"),
                    spec: Checkout::Consume {
                        prefetch,
                        no_ack,
                        priority,
                        exclusive: false,
                    },
                }
            }
        ),
        ch.clone().prop_map(|c| QqOp::Checkout {
            consumer: cid(c, "t"),
            spec: Checkout::Cancel
        }),
        (ch.clone(), any::<bool>()).prop_map(|(c, no_ack)| QqOp::Checkout {
            consumer: cid(c, ""),
            spec: Checkout::Get { no_ack }
        }),
        (ch.clone(), 1u32..3).prop_map(|(c, credit)| QqOp::Credit {
            consumer: cid(c, "t"),
            credit
        }),
        (ch.clone(), prop::collection::vec(1u64..30, 0..4)).prop_map(|(c, ids)| QqOp::Settle {
            channel: chan(c),
            ids
        }),
        (ch.clone(), prop::collection::vec(1u64..30, 0..4)).prop_map(|(c, ids)| QqOp::Return {
            channel: chan(c),
            ids
        }),
        (ch.clone(), prop::collection::vec(1u64..30, 0..4)).prop_map(|(c, ids)| QqOp::Discard {
            channel: chan(c),
            ids
        }),
        ch.prop_map(|c| QqOp::Down(Down::Channel(chan(c)))),
        Just(QqOp::Down(Down::Node(NODE))),
        Just(QqOp::Tick),
        Just(QqOp::Purge),
        Just(QqOp::LeaderChanged),
        (0u64..4, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(len, reject, sac, retry)| QqOp::Configure(QqConfig {
                max_length: Some(len + 1),
                reject_publish: reject,
                single_active_consumer: sac,
                delivery_limit: Some(1),
                message_ttl: Some(40),
                // back-off with jitter: replicas must draw the same delays
                retry: retry.then_some(crate::queue::retry::RetryPolicy {
                    kind: crate::queue::retry::RetryKind::All,
                    min_ms: 5,
                    max_ms: Some(30),
                    multiplier: Some(2),
                    jitter_pct: 50,
                }),
                ..QqConfig::default()
            })
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Two replicas fed the same commands decide the same effects and export the same
    /// bytes; a replica imported from a snapshot goes on exactly as the original.
    #[test]
    fn replicas_agree(ops in prop::collection::vec((op_strategy(), 0u64..30), 1..60)) {
        let cfg = QqConfig { delivery_limit: Some(2), ..QqConfig::default() };
        let (mut a, mut b) = (QqState::new(cfg.clone()), QqState::new(cfg));
        let mut ts = 1_000;
        for (i, (op, dt)) in ops.iter().enumerate() {
            ts += dt;
            let cmd = QqCmd { ts_ms: ts, op: op.clone() };
            let ra = a.apply(i as u64, &cmd);
            let rb = b.apply(i as u64, &cmd);
            prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
            let bytes = a.export();
            prop_assert_eq!(&bytes, &b.export());
            if i % 7 == 0 {
                let mut c = QqState::import(&bytes).unwrap();
                prop_assert_eq!(&c.export(), &bytes);
                let next = QqCmd { ts_ms: ts + 1, op: QqOp::Tick };
                let (x, y) = (a.apply(1000, &next), c.apply(1000, &next));
                b.apply(1000, &next);
                prop_assert_eq!(format!("{x:?}"), format!("{y:?}"));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A `Batch` entry is the same as its commands as entries of their own at the
    /// batch's time: the same answers, effects and state.
    #[test]
    fn a_batch_is_its_commands_in_order(
        rounds in prop::collection::vec((prop::collection::vec(op_strategy(), 1..6), 0u64..30), 1..20)
    ) {
        let cfg = QqConfig { delivery_limit: Some(2), ..QqConfig::default() };
        let (mut one, mut batched) = (QqState::new(cfg.clone()), QqState::new(cfg));
        let mut ts = 1_000;
        for (i, (ops, dt)) in rounds.iter().enumerate() {
            ts += dt;
            let (mut resps, mut fx) = (Vec::new(), Vec::new());
            for op in ops {
                let (r, f) = one.apply(i as u64, &QqCmd { ts_ms: ts, op: op.clone() });
                resps.push(r);
                fx.extend(f);
            }
            let (r, f) = batched.apply(i as u64, &QqCmd { ts_ms: ts, op: QqOp::Batch(ops.clone()) });
            prop_assert_eq!(r, QqResp::Batch(resps));
            prop_assert_eq!(format!("{f:?}"), format!("{fx:?}"));
            prop_assert_eq!(one.export(), batched.export());
        }
    }
}
