//! A consumer's deliveries: each is written into the connection's buffer with the
//! channel's next delivery tag (and recorded unacked, unless no-ack), or handed back to
//! its queue when the consumer is gone or the message cannot be sent.

use super::consumer::{ConsumerActor, Pending};
use crate::amqp::connection::ConnectionFail;
use crate::amqp::shared::OUT_HIGH;
use crate::broker::queue::{Deliver, DeliverBatch};
use actix::prelude::*;
use broker_core::names::MAX_SHORTSTR;
use broker_core::AmqpError;
use std::sync::atomic::Ordering;

/// The error for a message whose content header does not fit in one frame of a
/// connection's negotiated `frame_max`. RabbitMQ sends such a header anyway, as a frame
/// larger than the client agreed to receive; we never do: the message goes back to its
/// queue unchanged (where a consumer with a larger frame_max can take it) and the channel
/// closes with 406, so the client learns why it gets nothing.
pub(crate) fn header_too_large(raw_properties: &[u8], frame_max: u32) -> Option<AmqpError> {
    if broker_wire::encode::header_fits(raw_properties.len(), frame_max) {
        return None;
    }
    Some(AmqpError::precondition_failed(format!(
        "message content header of {} bytes exceeds the frame_max {frame_max} negotiated by this connection",
        broker_wire::encode::header_frame_len(raw_properties.len())
    )))
}

impl Handler<DeliverBatch> for ConsumerActor {
    type Result = ();
    fn handle(&mut self, b: DeliverBatch, _: &mut Context<Self>) {
        let mut live = self.live();
        // credit goes back once per batch; what cannot be delivered goes back in one Restore
        let mut written = 0u32;
        let mut any = false;
        let mut back = Vec::new();
        let no_ack = self.gate.no_ack;
        for d in b.0 {
            if live {
                match self.sendable(&d) {
                    Ok(()) => {
                        any = true;
                        written += u32::from(self.write(d));
                        continue;
                    }
                    Err(Unsendable::Connection(e)) => self.conn.do_send(ConnectionFail(e)),
                    Err(Unsendable::Channel(e)) => {
                        live = false;
                        self.fail_channel(e);
                    }
                }
            }
            // cancelled or closed while the delivery was on its way: hand it back
            d.gate.undo();
            back.push(d.entry);
        }
        if written > 0 && self.gate.written_n(written) {
            self.queue.kick();
        }
        if !back.is_empty() {
            self.queue.restore(back, no_ack);
        }
        if any {
            self.request_flush();
        }
    }
}

/// Why a delivery cannot be written.
enum Unsendable {
    /// The connection closes (541).
    Connection(AmqpError),
    /// The channel closes (406).
    Channel(AmqpError),
}

impl ConsumerActor {
    /// Whether this connection can be sent `d`.
    fn sendable(&self, d: &Deliver) -> Result<(), Unsendable> {
        // names longer than a shortstr (only the HTTP API can publish such a routing key)
        // cannot be sent: 541 as RabbitMQ, never a truncated routing key
        if d.msg.exchange.len() > MAX_SHORTSTR || d.msg.routing_key.len() > MAX_SHORTSTR {
            return Err(Unsendable::Connection(AmqpError::internal(
                "a message's routing key or exchange is longer than 255 bytes and cannot be delivered",
            )));
        }
        match header_too_large(&d.msg.raw_properties, self.shared.frame_max.get()) {
            Some(e) => Err(Unsendable::Channel(e)),
            None => Ok(()),
        }
    }

    /// Writes one delivery into the connection's buffer. Returns whether its outstanding
    /// credit goes back now (false: held until the buffer drains).
    fn write(&mut self, d: Deliver) -> bool {
        let tag = {
            let mut dl = self.deliveries.borrow_mut();
            if d.no_ack {
                dl.unacked.next_tag()
            } else {
                self.stats.unacked.fetch_add(1, Ordering::Relaxed);
                dl.unacked.record(Pending {
                    queue: d.queue.clone(),
                    id: d.entry.id,
                    gate: Some(d.gate.clone()),
                    detached: false,
                })
            }
        };
        let msg = &d.msg;
        let channel = self.key.channel;
        {
            let mut out = self.shared.out.borrow_mut();
            broker_wire::encode::deliver(
                &mut out,
                channel,
                &d.consumer_tag,
                tag.0,
                d.entry.redelivered,
                &msg.exchange,
                &msg.routing_key,
            );
            broker_wire::encode::content(
                &mut out,
                channel,
                &msg.raw_properties,
                &msg.body,
                self.shared.frame_max.get(),
            );
        }
        if self.shared.out_len() > OUT_HIGH {
            self.shared.deferred.borrow_mut().push((d.gate, d.queue));
            false
        } else {
            true
        }
    }
}
