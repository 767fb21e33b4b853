//! Unit tests of the queue state.

use super::*;
use amq_protocol::protocol::basic::AMQPProperties;
use bytes::Bytes;

fn msg(body: &'static str) -> Arc<Message> {
    msg_with(body, AMQPProperties::default())
}

fn msg_with(body: &'static str, properties: AMQPProperties) -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: properties.into(),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from_static(body.as_bytes()),
        persist_id: None,
        arrival_ms: 1000,
    })
}

fn body(e: &Entry) -> String {
    String::from_utf8(e.msg.loaded().unwrap().body.to_vec()).unwrap()
}

fn queue(args: QueueArgs) -> QueueState<()> {
    let mut q = QueueState::new(args);
    q.tick(1000);
    q
}

const CH: ChannelKey = ChannelKey {
    connection: 1,
    channel: 1,
};

fn consumer(tag: &str, no_ack: bool) -> Consumer<()> {
    Consumer {
        channel: CH,
        tag: tag.into(),
        no_ack,
        exclusive: false,
        priority: 0,
        data: (),
    }
}

#[test]
fn an_emptied_state_never_reuses_ids() {
    let mut q: QueueState<()> = QueueState::default();
    let a = q.publish(msg("a"));
    let mut fresh = q.emptied();
    assert_eq!(fresh.ready_count(), 0);
    assert!(fresh.publish(msg("b")) > a);
}

#[test]
fn round_robin() {
    let mut q = QueueState::default();
    q.add_consumer(consumer("a", true), "q", "/").unwrap();
    q.add_consumer(consumer("b", true), "q", "/").unwrap();
    for b in ["1", "2", "3", "4"] {
        q.publish(msg(b));
    }
    let mut got = vec![];
    while let Some(d) = q.next_delivery(|_, _| true) {
        got.push(format!(
            "{}{}",
            d.consumer.tag,
            std::str::from_utf8(&d.entry.msg.loaded().unwrap().body).unwrap()
        ));
    }
    assert_eq!(got, vec!["a1", "b2", "a3", "b4"]);
}

#[test]
fn requeue_restores_order_and_marks_redelivered() {
    let mut q: QueueState<()> = QueueState::default();
    for b in ["1", "2", "3"] {
        q.publish(msg(b));
    }
    let a = q.get(CH, false).unwrap();
    let b = q.get(CH, false).unwrap();
    assert_eq!(q.requeue(&[b.id, a.id], true), 2);
    assert_eq!(q.ready_ids(), vec![1, 2, 3]);
    let flags: Vec<bool> = (0..3)
        .map(|_| q.get(CH, true).unwrap().redelivered)
        .collect();
    assert_eq!(flags, vec![true, true, false]);
}

#[test]
fn channel_close_requeues_its_unacked() {
    let mut q = QueueState::default();
    q.add_consumer(consumer("a", false), "q", "/").unwrap();
    q.publish(msg("x"));
    let id = q.next_delivery(|_, _| true).unwrap().entry.id;
    assert_eq!(q.unacked_count(), 1);
    assert_eq!(q.channel_closed(CH), 1);
    assert_eq!(q.unacked_count(), 0);
    assert_eq!(q.ready_count(), 1);
    assert_eq!(q.head().unwrap().id, id);
    assert!(q.head().unwrap().redelivered);
}

#[test]
fn exclusive_consumer_blocks_others() {
    let mut q = QueueState::default();
    let mut c = consumer("a", false);
    c.exclusive = true;
    q.add_consumer(c, "q", "/").unwrap();
    assert_eq!(
        q.add_consumer(consumer("b", false), "q", "/")
            .unwrap_err()
            .code,
        crate::ReplyCode::AccessRefused
    );
}

#[test]
fn refused_consumer_is_skipped() {
    let mut q = QueueState::default();
    q.add_consumer(consumer("a", false), "q", "/").unwrap();
    q.add_consumer(consumer("b", false), "q", "/").unwrap();
    q.publish(msg("1"));
    let d = q.next_delivery(|c, _| &*c.tag == "b").unwrap();
    assert_eq!(&*d.consumer.tag, "b");
    assert!(q.next_delivery(|_, _| true).is_none());
}

#[test]
fn ttl_expires_at_the_head_and_requeue_keeps_the_expiry() {
    let mut q = queue(QueueArgs {
        message_ttl: Some(100),
        ..Default::default()
    });
    q.publish(msg("a"));
    q.publish(msg_with(
        "b",
        AMQPProperties::default().with_expiration("50".into()),
    ));
    assert_eq!(q.next_expiry(), Some(1100));
    q.tick(1101);
    q.expire();
    let dead = q.take_dead();
    assert_eq!(
        dead.len(),
        2,
        "b expired earlier but died when it reached the head"
    );
    assert!(dead.iter().all(|(_, r)| *r == Reason::Expired));
    // a requeued message keeps its original expiry
    q.publish(msg("c"));
    let got = q.get(CH, false).unwrap();
    q.requeue(&[got.id], true);
    q.tick(1101 + 101);
    assert!(q.get(CH, true).is_none());
    assert_eq!(q.take_dead().len(), 1);
}

#[test]
fn ttl_zero_reaches_a_waiting_consumer_only() {
    let mut q = queue(QueueArgs {
        message_ttl: Some(0),
        ..Default::default()
    });
    q.add_consumer(consumer("a", true), "q", "/").unwrap();
    q.publish(msg("now"));
    assert_eq!(body(&q.next_delivery(|_, _| true).unwrap().entry), "now");
    q.publish(msg("later"));
    q.tick(1001);
    assert!(q.next_delivery(|_, _| false).is_none());
    assert_eq!(q.take_dead().len(), 1);
}

#[test]
fn drop_head_and_reject_publish() {
    let mut q = queue(QueueArgs {
        max_length: Some(2),
        ..Default::default()
    });
    for b in ["1", "2", "3"] {
        q.publish(msg(b));
    }
    let dead = q.take_dead();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (body(&dead[0].0).as_str(), dead[0].1),
        ("1", Reason::Maxlen)
    );
    let mut q = queue(QueueArgs {
        max_length: Some(2),
        overflow: Overflow::RejectPublish,
        ..Default::default()
    });
    assert!(q.publish(msg("1")).is_some());
    assert!(q.publish(msg("2")).is_some());
    assert!(q.publish(msg("3")).is_none());
    assert!(q.take_dead().is_empty(), "reject-publish drops silently");
    let mut q = queue(QueueArgs {
        max_length_bytes: Some(4),
        overflow: Overflow::RejectPublishDlx,
        ..Default::default()
    });
    assert!(q.publish(msg("ab")).is_some());
    assert!(q.publish(msg("cd")).is_some());
    assert!(q.publish(msg("e")).is_none());
    assert_eq!(q.take_dead()[0].1, Reason::Maxlen);
}

#[test]
fn priorities_first_fifo_within() {
    let mut q = queue(QueueArgs {
        max_priority: Some(5),
        ..Default::default()
    });
    let p = |n| AMQPProperties::default().with_priority(n);
    q.publish(msg_with("low1", p(1)));
    q.publish(msg_with("high", p(9)));
    q.publish(msg("none"));
    q.publish(msg_with("low2", p(1)));
    let order: Vec<String> = std::iter::from_fn(|| q.get(CH, true))
        .map(|e| body(&e))
        .collect();
    assert_eq!(order, vec!["high", "low1", "low2", "none"]);
}

#[test]
fn delivery_limit_dead_letters_after_n_returns() {
    let mut q = queue(QueueArgs {
        delivery_limit: Some(2),
        ..Default::default()
    });
    q.publish(msg("poison"));
    for expected in 0..=2 {
        let e = q.get(CH, false).unwrap();
        assert_eq!(e.returns, expected);
        q.requeue(&[e.id], true);
    }
    assert_eq!(q.ready_count(), 0);
    assert_eq!(q.take_dead()[0].1, Reason::DeliveryLimit);
}

#[test]
fn consumer_priority_then_round_robin() {
    let mut q = queue(QueueArgs::default());
    q.add_consumer(consumer("low", true), "q", "/").unwrap();
    let mut hi = consumer("hi", true);
    hi.priority = 10;
    q.add_consumer(hi, "q", "/").unwrap();
    for b in ["1", "2", "3"] {
        q.publish(msg(b));
    }
    let tag = |q: &mut QueueState<()>, room: &dyn Fn(&str) -> bool| {
        q.next_delivery(|c, _| room(&c.tag))
            .map(|d| d.consumer.tag.to_string())
    };
    assert_eq!(tag(&mut q, &|_| true).as_deref(), Some("hi"));
    assert_eq!(tag(&mut q, &|_| true).as_deref(), Some("hi"));
    assert_eq!(tag(&mut q, &|t| t != "hi").as_deref(), Some("low"));
}

#[test]
fn single_active_consumer_hands_over() {
    let mut q = queue(QueueArgs {
        single_active_consumer: true,
        ..Default::default()
    });
    q.add_consumer(consumer("first", true), "q", "/").unwrap();
    q.add_consumer(consumer("second", true), "q", "/").unwrap();
    for b in ["1", "2"] {
        q.publish(msg(b));
    }
    assert_eq!(
        &*q.next_delivery(|_, _| true).unwrap().consumer.tag,
        "first"
    );
    q.remove_consumer(CH, "first");
    assert_eq!(
        &*q.next_delivery(|_, _| true).unwrap().consumer.tag,
        "second"
    );
}

#[test]
fn consumer_timeout_finds_the_holder() {
    let mut q = queue(QueueArgs::default());
    q.add_consumer(consumer("slow", false), "q", "/").unwrap();
    q.publish(msg("1"));
    let id = q.next_delivery(|_, _| true).unwrap().entry.id;
    q.tick(1000 + 500);
    assert!(q.timed_out_consumers(1000).is_empty());
    q.tick(1000 + 1001);
    assert_eq!(q.timed_out_consumers(1000), vec![(CH, Arc::from("slow"))]);
    q.remove_consumer(CH, "slow");
    assert_eq!(q.requeue_consumer(CH, "slow"), 1);
    let e = q.get(CH, true).unwrap();
    assert_eq!((e.id, e.redelivered), (id, true));
}

#[test]
fn rejected_messages_die_with_reason_rejected() {
    let mut q = queue(QueueArgs::default());
    q.publish(msg("1"));
    let e = q.get(CH, false).unwrap();
    q.discard(&[e.id]);
    let dead = q.take_dead();
    assert_eq!((dead.len(), dead[0].1), (1, Reason::Rejected));
}
