//! Deliveries from queues to this channel's consumers: each is written into the
//! connection's buffer with the next delivery tag, or handed back to its queue when its
//! consumer is gone or it cannot be sent; a queue's basic.cancel for a consumer.

use super::send_message::Carrier;
use super::*;

impl Handler<DeliverBatch> for ChannelActor {
    type Result = ();
    fn handle(&mut self, b: DeliverBatch, ctx: &mut Context<Self>) {
        // credit goes back once per run of deliveries to the same consumer
        let release = |(g, q, n): (Arc<ConsumerGate>, Arc<QueueEntry>, u32)| {
            if g.written_n(n) {
                q.kick();
            }
        };
        let mut run: Option<(Arc<ConsumerGate>, Arc<QueueEntry>, u32)> = None;
        for d in b.0 {
            let Some((gate, queue, units)) = self.deliver_one(d, ctx) else {
                continue;
            };
            match &mut run {
                Some((g, _, n)) if Arc::ptr_eq(g, &gate) => *n += units,
                _ => run
                    .replace((gate, queue, units))
                    .into_iter()
                    .for_each(release),
            }
        }
        run.into_iter().for_each(release);
        self.request_flush();
    }
}

impl ChannelActor {
    /// The error for a message whose content header does not fit in one frame of this
    /// connection's negotiated frame_max. RabbitMQ sends such a header anyway, as a frame
    /// larger than the client agreed to receive; we never do: the message goes back to its
    /// queue unchanged (where a consumer with a larger frame_max can take it) and the
    /// channel closes with 406, so the client learns why it gets nothing.
    pub(crate) fn header_too_large(&self, raw_properties: &[u8]) -> Option<AmqpError> {
        let frame_max = self.shared.frame_max.get();
        if broker_wire::encode::header_fits(raw_properties.len(), frame_max) {
            return None;
        }
        Some(AmqpError::precondition_failed(format!(
            "message content header of {} bytes exceeds the frame_max {frame_max} negotiated by this connection",
            broker_wire::encode::header_frame_len(raw_properties.len())
        )))
    }

    /// Writes one delivery into the connection's buffer (or hands it back if its consumer
    /// is gone). Returns the gate whose outstanding credit the caller releases, and how
    /// many units (none if the delivery was handed back, or the credit is held until the
    /// buffer drains).
    fn deliver_one(
        &mut self,
        d: Deliver,
        ctx: &mut Context<Self>,
    ) -> Option<(Arc<ConsumerGate>, Arc<QueueEntry>, u32)> {
        let live = !self.closing
            && self
                .consumers
                .get(&d.consumer_tag)
                .is_some_and(|c| Arc::ptr_eq(&c.gate, &d.gate));
        let too_large = self.header_too_large(&d.msg.raw_properties);
        // names longer than a shortstr (only the HTTP API can publish such a routing key)
        // cannot be sent: 541 as RabbitMQ, never a truncated routing key
        let unsendable =
            d.msg.exchange.len() > MAX_SHORTSTR || d.msg.routing_key.len() > MAX_SHORTSTR;
        if unsendable && live {
            self.conn.do_send(ConnectionFail(AmqpError::internal(
                "a message's routing key or exchange is longer than 255 bytes and cannot be delivered",
            )));
        }
        if !live || unsendable || too_large.is_some() {
            // cancelled or closed while the delivery was on its way: hand it back
            d.gate.undo(d.units);
            d.queue.restore(vec![d.entry], d.no_ack);
            if let Some(e) = too_large {
                self.fail(e, ctx);
            }
            return None;
        }
        let tag = if d.no_ack {
            self.unacked.next_tag()
        } else {
            self.stats
                .unacked
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.unacked.record(Pending {
                queue: d.queue.clone(),
                id: d.entry.id,
                gate: Some(d.gate.clone()),
            })
        };
        let carrier = Carrier::Deliver {
            consumer_tag: &d.consumer_tag,
            delivery_tag: tag.0,
            redelivered: d.entry.redelivered,
        };
        self.send_message(carrier, &d.msg);
        if self.shared.out_len() > OUT_HIGH {
            self.shared
                .deferred
                .borrow_mut()
                .push((d.gate, d.queue, d.units));
            None
        } else {
            Some((d.gate, d.queue, d.units))
        }
    }
}

impl Handler<ConsumerCancelled> for ChannelActor {
    type Result = ();
    fn handle(&mut self, m: ConsumerCancelled, ctx: &mut Context<Self>) {
        let Some(rec) = self
            .consumers
            .remove(&m.consumer_tag)
            .filter(|_| !self.closing)
        else {
            return;
        };
        if !rec.queue.is_local() {
            crate::broker::remote_consume::registry().remove(self.key, &m.consumer_tag);
        }
        match broker_core::names::shortstr("consumer tag", &m.consumer_tag) {
            Ok(consumer_tag) => self.send(AMQPClass::Basic(b::AMQPMethod::Cancel(b::Cancel {
                consumer_tag,
                nowait: true,
            }))),
            Err(e) => self.fail(e, ctx),
        }
    }
}
