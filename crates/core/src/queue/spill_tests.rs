//! The ready list with spills: the window in memory, the rest spilled, order kept
//! across spill and head, counts that include spilled messages.

use super::spill::{Lost, MemorySpills, Popped, Spill, SpillFactory};
use super::*;
use bytes::Bytes;

fn msg(i: u32) -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "q".into(),
        properties: Default::default(),
        raw_properties: Bytes::from_static(&[0, 0]),
        body: Bytes::from(i.to_string()),
        persist_id: None,
        arrival_ms: 1000,
    })
}

fn spilling(window: usize) -> QueueState<()> {
    let mut q = QueueState::new(QueueArgs::default());
    q.tick(1000);
    q.set_spills(Arc::new(MemorySpills), window, 1 << 30);
    q
}

fn take_all(q: &mut QueueState<()>) -> Vec<String> {
    let mut out = vec![];
    while let Some(d) = q.next_delivery(|_, _| true) {
        out.push(String::from_utf8(d.entry.msg.loaded().unwrap().body.to_vec()).unwrap());
    }
    out
}

fn consumer() -> Consumer<()> {
    Consumer {
        channel: ChannelKey {
            connection: 1,
            channel: 1,
        },
        tag: "c".into(),
        no_ack: true,
        exclusive: false,
        priority: 0,
        data: (),
    }
}

#[test]
fn past_the_window_messages_spill_and_come_back_in_order() {
    let mut q = spilling(4);
    for i in 0..20 {
        q.publish(msg(i));
    }
    assert_eq!(q.ready_count(), 20, "spilled messages count as ready");
    assert_eq!(q.ready_in_memory(), 4);
    q.add_consumer(consumer(), "q", "/").unwrap();
    let got = take_all(&mut q);
    assert_eq!(got, (0..20).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(q.ready_count(), 0);
    assert_eq!(q.bytes(), 0);
}

#[test]
fn a_requeued_message_goes_back_before_the_spilled_ones() {
    let mut q = spilling(2);
    for i in 0..6 {
        q.publish(msg(i));
    }
    let mut c = consumer();
    c.no_ack = false;
    q.add_consumer(c, "q", "/").unwrap();
    let first = q.next_delivery(|_, _| true).unwrap().entry.id;
    q.requeue(&[first], true);
    q.remove_consumer(
        ChannelKey {
            connection: 1,
            channel: 1,
        },
        "c",
    );
    q.add_consumer(consumer(), "q", "/").unwrap();
    assert_eq!(take_all(&mut q), ["0", "1", "2", "3", "4", "5"]);
}

#[test]
fn purge_counts_spilled_messages() {
    let mut q = spilling(3);
    for i in 0..10 {
        q.publish(msg(i));
    }
    let p = q.purge();
    assert_eq!((p.count, p.entries.len()), (10, 3));
    assert_eq!(q.ready_count(), 0);
    q.publish(msg(99));
    q.add_consumer(consumer(), "q", "/").unwrap();
    assert_eq!(take_all(&mut q), ["99"]);
}

#[test]
fn length_limits_count_spilled_messages() {
    let mut q = QueueState::new(QueueArgs {
        max_length: Some(5),
        ..Default::default()
    });
    q.tick(1000);
    q.set_spills(Arc::new(MemorySpills), 2, 1 << 30);
    for i in 0..8 {
        q.publish(msg(i));
    }
    assert_eq!(q.ready_count(), 5);
    q.add_consumer(consumer(), "q", "/").unwrap();
    assert_eq!(take_all(&mut q), ["3", "4", "5", "6", "7"]);
}

/// A spill that refuses writes (a full disk): entries stay in memory, in order.
#[derive(Debug)]
struct Refusing;
impl Spill for Refusing {
    fn push(&mut self, e: Entry) -> Result<(), Entry> {
        Err(e)
    }
    fn pop(&mut self, _: usize, _: usize) -> Popped {
        Popped::default()
    }
    fn len(&self) -> usize {
        0
    }
    fn clear(&mut self) -> Vec<u64> {
        vec![]
    }
}
#[derive(Debug)]
struct Refusals;
impl SpillFactory for Refusals {
    fn create(&self) -> Option<Box<dyn Spill>> {
        Some(Box::new(Refusing))
    }
}

#[test]
fn a_spill_that_cannot_write_leaves_messages_in_memory() {
    let mut q = QueueState::new(QueueArgs::default());
    q.set_spills(Arc::new(Refusals), 2, 1 << 30);
    for i in 0..5 {
        q.publish(msg(i));
    }
    assert_eq!((q.ready_count(), q.ready_in_memory()), (5, 5));
    q.add_consumer(consumer(), "q", "/").unwrap();
    assert_eq!(take_all(&mut q), ["0", "1", "2", "3", "4"]);
}

/// A spill whose first read fails (an I/O error that passes) and that loses one damaged
/// record on the next.
#[derive(Debug, Default)]
struct Flaky {
    inner: std::collections::VecDeque<Entry>,
    failed_once: bool,
    lost_once: bool,
}
impl Spill for Flaky {
    fn push(&mut self, e: Entry) -> Result<(), Entry> {
        self.inner.push_back(e);
        Ok(())
    }
    fn pop(&mut self, max: usize, _: usize) -> Popped {
        if !self.failed_once {
            self.failed_once = true;
            return Popped::default();
        }
        let mut p = Popped::default();
        if self.lost_once {
            while p.entries.len() < max {
                match self.inner.pop_front() {
                    Some(e) => p.entries.push(e),
                    None => break,
                }
            }
            return p;
        }
        self.lost_once = true;
        if let Some(bad) = self.inner.pop_front() {
            p.lost = Lost {
                count: 1,
                bytes: bad.msg.size(),
                body_bytes: bad.body_len as usize,
            };
        }
        while p.entries.len() < max {
            match self.inner.pop_front() {
                Some(e) => p.entries.push(e),
                None => break,
            }
        }
        p
    }
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn clear(&mut self) -> Vec<u64> {
        self.inner.clear();
        vec![]
    }
}
#[derive(Debug)]
struct Flakies;
impl SpillFactory for Flakies {
    fn create(&self) -> Option<Box<dyn Spill>> {
        Some(Box::new(Flaky::default()))
    }
}

#[test]
fn a_failed_read_loses_nothing_and_is_retried_and_a_damaged_record_is_counted_out() {
    let mut q = QueueState::new(QueueArgs::default());
    q.set_spills(Arc::new(Flakies), 1, 1 << 30);
    for i in 0..4 {
        q.publish(msg(i));
    }
    q.add_consumer(consumer(), "q", "/").unwrap();
    // the head goes; the read behind it fails: nothing lost, the queue is stalled
    assert_eq!(take_all(&mut q), ["0"]);
    assert_eq!(q.ready_count(), 3);
    assert!(q.spills_stalled());
    // the retry reads on; one record was damaged and is counted out
    assert!(q.retry_spills());
    assert_eq!(q.take_spill_losses().count, 1);
    assert_eq!(take_all(&mut q), ["2", "3"]);
    assert_eq!((q.ready_count(), q.bytes()), (0, 0));
}

#[test]
fn peek_copies_from_head_and_spill_without_taking() {
    let mut q = spilling(4);
    for i in 0..10 {
        q.publish(msg(i));
    }
    let body = |e: &Entry| String::from_utf8(e.msg.loaded().unwrap().body.to_vec()).unwrap();
    // across the head (0..4) and the spill (4..10)
    let seen: Vec<String> = q.peek(2, 5).unwrap().iter().map(body).collect();
    assert_eq!(seen, ["2", "3", "4", "5", "6"]);
    assert_eq!(q.peek(9, 5).unwrap().len(), 1);
    assert!(q.peek(10, 5).unwrap().is_empty());
    assert_eq!(q.ready_count(), 10);
    assert_eq!(q.ready_in_memory(), 4);
    q.add_consumer(consumer(), "q", "/").unwrap();
    assert_eq!(
        take_all(&mut q),
        (0..10).map(|i| i.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn peek_follows_priority_order() {
    let args = QueueArgs {
        max_priority: Some(2),
        ..QueueArgs::default()
    };
    let mut q: QueueState<()> = QueueState::new(args);
    q.tick(1000);
    for (i, p) in [(0u32, 0u8), (1, 2), (2, 1), (3, 2)] {
        let props = broker_wire::protocol::basic::AMQPProperties::default().with_priority(p);
        q.publish(Arc::new(Message {
            properties: crate::message::Properties::new(props),
            body: Bytes::from(i.to_string()),
            ..Arc::into_inner(msg(i)).unwrap()
        }));
    }
    let seen: Vec<String> = q
        .peek(0, 10)
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.msg.loaded().unwrap().body.to_vec()).unwrap())
        .collect();
    assert_eq!(seen, ["1", "3", "2", "0"]);
}
