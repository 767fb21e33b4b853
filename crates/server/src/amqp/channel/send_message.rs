//! Writing a message to the client: the method that carries it (basic.deliver to a
//! consumer, basic.get-ok, basic.return), then its content header and body frames cut
//! to this connection's frame_max, into the connection's shared write buffer, and a
//! flush request. Every path that hands a message out writes these frames the same way.

use super::ChannelActor;
use broker_core::Message;
use broker_wire::protocol::AMQPClass;

/// The method frame a message travels behind.
pub(crate) enum Carrier<'a> {
    /// basic.deliver to `consumer_tag`, hand-encoded (it is on every consumed message's
    /// path); exchange and routing key are the message's own.
    Deliver {
        /// The consumer's tag.
        consumer_tag: &'a str,
        /// This channel's delivery tag for the message.
        delivery_tag: u64,
        /// Whether the message was delivered before.
        redelivered: bool,
    },
    /// Any other content-bearing method (basic.get-ok, basic.return).
    Method(AMQPClass),
}

impl ChannelActor {
    /// Writes `carrier` and `msg`'s header and body frames under one borrow of the
    /// write buffer, then asks for a flush (one per turn of the connection, however
    /// many messages a batch writes). The body is shared `Bytes`: its only copy is the
    /// one into the buffer. The caller has checked that the header fits in a frame
    /// ([`ChannelActor::header_too_large`]) and that the names fit a shortstr.
    pub(crate) fn send_message(&self, carrier: Carrier<'_>, msg: &Message) {
        {
            let mut out = self.shared.out.borrow_mut();
            match carrier {
                Carrier::Deliver {
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                } => broker_wire::encode::deliver(
                    &mut out,
                    self.id,
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    &msg.exchange,
                    &msg.routing_key,
                ),
                Carrier::Method(m) => broker_wire::encode::method(&mut out, self.id, &m),
            }
            broker_wire::encode::content(
                &mut out,
                self.id,
                &msg.raw_properties,
                &msg.body,
                self.shared.frame_max.get(),
            );
        }
        self.request_flush();
    }
}
