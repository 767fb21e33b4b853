//! basic.get on a queue whose home is another node (docs/design/cluster.md §6): the
//! request goes to the home (`QueueEntry::remote_get`), and the message it answers is
//! sent to the client as a local one is ([`ChannelActor::get_ok`], shared by both). Its
//! ack, nack or reject goes back as a note through the queue entry (`ops.rs`), and so
//! does this channel's close.

use super::{ChannelActor, Pending};
use crate::broker::queue::QueueEntry;
use actix::prelude::*;
use broker_core::names::shortstr;
use broker_core::{AmqpError, Message};
use broker_wire::protocol::{basic as b, AMQPClass};
use std::sync::Arc;

/// A message basic.get took from a queue: its id there, whether it was delivered
/// before, the message and how many are left.
pub(super) struct Got {
    pub(super) id: u64,
    pub(super) redelivered: bool,
    pub(super) msg: Arc<Message>,
    pub(super) remaining: u32,
}

impl ChannelActor {
    /// basic.get through the queue's home node.
    pub(super) fn remote_get(
        &mut self,
        q: Arc<QueueEntry>,
        no_ack: bool,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        let get = q.remote_get(self.key, no_ack);
        self.wait_then(ctx, (60, 70), get, move |act, got, ctx| match got {
            None => act.send(AMQPClass::Basic(b::AMQPMethod::GetEmpty(b::GetEmpty {}))),
            Some((id, redelivered, msg, remaining)) => {
                let got = Got {
                    id,
                    redelivered,
                    msg,
                    remaining,
                };
                let back = q.clone();
                let restore = move || {
                    if !no_ack {
                        back.restore_remote(id)
                    }
                };
                act.get_ok(&q, got, no_ack, restore, ctx);
            }
        });
        Ok(())
    }

    /// Sends basic.get-ok with the message, recording it as unacked unless `no_ack`.
    /// A message the client cannot be sent (its header is above the frame limit, its
    /// names do not fit a shortstr) goes back through `restore` and the channel closes,
    /// as RabbitMQ's does.
    pub(super) fn get_ok(
        &mut self,
        q: &Arc<QueueEntry>,
        got: Got,
        no_ack: bool,
        restore: impl FnOnce(),
        ctx: &mut Context<Self>,
    ) {
        if let Some(e) = self.header_too_large(&got.msg.raw_properties) {
            // back to the queue unchanged; the channel closes with 406
            restore();
            self.fail(e.on(60, 70), ctx);
            return;
        }
        // a message whose names do not fit a shortstr cannot be sent: 541 as RabbitMQ
        // (the queue takes an unacked one back when we close)
        let msg = &got.msg;
        let names = shortstr("exchange", &msg.exchange)
            .and_then(|x| Ok((x, shortstr("routing key", &msg.routing_key)?)));
        let (exchange, routing_key) = match names {
            Ok(n) => n,
            Err(e) => return self.fail(e.on(60, 70), ctx),
        };
        let tag = if no_ack {
            self.unacked.next_tag()
        } else {
            self.unacked.record(Pending {
                queue: q.clone(),
                id: got.id,
                gate: None,
            })
        };
        self.shared.method(
            self.id,
            &AMQPClass::Basic(b::AMQPMethod::GetOk(b::GetOk {
                delivery_tag: tag.0,
                redelivered: got.redelivered,
                exchange,
                routing_key,
                message_count: got.remaining,
            })),
        );
        broker_wire::encode::content(
            &mut self.shared.out.borrow_mut(),
            self.id,
            &msg.raw_properties,
            &msg.body,
            self.shared.frame_max.get(),
        );
        self.request_flush();
    }
}
