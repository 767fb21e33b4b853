//! Methods naming an exchange or queue this node does not know yet, on a node of a
//! cluster (docs/design/cluster.md §2): a declare answered by another node is committed
//! and applied there before this node applies it, so a client that declares through
//! node 1 and at once uses the name through node 2 could get a 404 (or, for an unbind,
//! an unbind-ok that removed nothing). Such a method waits until this node has applied
//! everything the metadata group committed before now (`VHost::catch_up`, an empty
//! transaction) and then runs as it would have: its answer is the one RabbitMQ's
//! single store gives. The channel takes nothing else meanwhile (`ctx.wait`), so the
//! method keeps its place among the channel's others (a publish stays before the next).
//!
//! What is looked at: basic.consume, basic.get, queue.purge, queue.delete (its queue),
//! queue.unbind (queue and exchange), passive exchange.declare (its exchange),
//! exchange.bind and exchange.unbind (both ends), and basic.publish (its exchange). A
//! name that is known costs one map lookup; a cluster of one never waits.

use super::ChannelActor;
use actix::prelude::*;
use broker_wire::assembly::Content;
use broker_wire::protocol::{basic as b, exchange as x, queue as q, AMQPClass};

impl ChannelActor {
    /// Whether method `m` names something this node does not know yet while it runs
    /// in a cluster (it is then worth a catch-up before the answer).
    pub(super) fn names_unknown(&self, m: &AMQPClass) -> bool {
        if !self.vhost.clustered() {
            return false;
        }
        match m {
            AMQPClass::Basic(b::AMQPMethod::Consume(c)) => self.unknown_queue(c.queue.as_str()),
            AMQPClass::Basic(b::AMQPMethod::Get(g)) => self.unknown_queue(g.queue.as_str()),
            AMQPClass::Queue(q::AMQPMethod::Purge(p)) => self.unknown_queue(p.queue.as_str()),
            AMQPClass::Queue(q::AMQPMethod::Delete(d)) => self.unknown_queue(d.queue.as_str()),
            AMQPClass::Queue(q::AMQPMethod::Unbind(u)) => {
                self.unknown_queue(u.queue.as_str()) || self.unknown_exchange(u.exchange.as_str())
            }
            AMQPClass::Exchange(x::AMQPMethod::Declare(d)) => {
                d.passive && self.unknown_exchange(d.exchange.as_str())
            }
            AMQPClass::Exchange(x::AMQPMethod::Bind(bd)) => {
                self.unknown_exchange(bd.source.as_str())
                    || self.unknown_exchange(bd.destination.as_str())
            }
            AMQPClass::Exchange(x::AMQPMethod::Unbind(bd)) => {
                self.unknown_exchange(bd.source.as_str())
                    || self.unknown_exchange(bd.destination.as_str())
            }
            _ => false,
        }
    }

    /// Whether basic.publish `p` names an exchange this node does not know yet while it
    /// runs in a cluster.
    pub(super) fn publishes_to_unknown(&self, p: &b::Publish) -> bool {
        self.vhost.clustered() && self.unknown_exchange(p.exchange.as_str())
    }

    /// Runs method `m` once this node has applied what the metadata group committed.
    pub(super) fn method_after_catch_up(&mut self, m: AMQPClass, ctx: &mut Context<Self>) {
        let cm = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let vhost = self.vhost.clone();
        let caught_up = async move {
            vhost.catch_up().await;
            Ok(())
        };
        self.wait_then(ctx, cm, caught_up, move |act, (), ctx| {
            if let Err(e) = act.dispatch_method(m, ctx) {
                act.fail(e, ctx);
            }
        });
    }

    /// Runs basic.publish `p` once this node has applied what the metadata group
    /// committed.
    pub(super) fn publish_after_catch_up(
        &mut self,
        p: b::Publish,
        content: Content,
        ctx: &mut Context<Self>,
    ) {
        let vhost = self.vhost.clone();
        let caught_up = async move {
            vhost.catch_up().await;
            Ok(())
        };
        self.wait_then(ctx, (60, 40), caught_up, move |act, (), ctx| {
            if let Err(e) = act.basic_publish(p, content, ctx) {
                act.fail(e.on(60, 40), ctx);
            }
        });
    }

    /// A queue name (empty: the channel's last declared queue) this node has no entry
    /// of.
    fn unknown_queue(&self, name: &str) -> bool {
        match self.queue_name(name) {
            Ok(n) => self.vhost.queue(&n).is_none(),
            Err(_) => false,
        }
    }

    /// An exchange name (not the default exchange) this node has no entry of.
    fn unknown_exchange(&self, name: &str) -> bool {
        !name.is_empty() && self.vhost.exchange(name).is_none()
    }
}
