//! exchange.* and queue.* methods: declare, delete, bind, unbind, purge.

use super::ChannelActor;
use crate::broker::queue;
use crate::broker::vhost::{string_arg, ExchangeSpec, QueueSpec};
use actix::prelude::*;
use broker_core::auth::Access;
use broker_core::deadletter::DEAD_LETTER_EXCHANGE;
use broker_core::names::shortstr;
use broker_core::routing::{Destination, ExchangeKind};
use broker_core::AmqpError;
use broker_wire::protocol::{exchange as x, queue as q, AMQPClass};
use broker_wire::types::ShortString;
use rand::distributions::Alphanumeric;
use rand::Rng;

fn mailbox(_: MailboxError) -> AmqpError {
    AmqpError::internal("queue unavailable")
}

/// A server-generated queue name, as RabbitMQ makes them.
fn generated_name() -> String {
    let suffix: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(22)
        .map(char::from)
        .collect();
    format!("amq.gen-{suffix}")
}

impl ChannelActor {
    pub(crate) fn exchange_method(
        &mut self,
        m: x::AMQPMethod,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        match m {
            x::AMQPMethod::Declare(d) => self.exchange_declare(d, ctx),
            x::AMQPMethod::Delete(d) => {
                self.allowed(Access::Configure, "exchange", d.exchange.as_str())?;
                let v = self.vhost.clone();
                let name = d.exchange.to_string();
                let nowait = d.nowait;
                self.wait_then(
                    ctx,
                    (40, 20),
                    async move { v.delete_exchange(&name, d.if_unused).await },
                    move |act, (), _| {
                        if !nowait {
                            act.send(AMQPClass::Exchange(x::AMQPMethod::DeleteOk(x::DeleteOk {})));
                        }
                    },
                );
                Ok(())
            }
            x::AMQPMethod::Bind(bd) => {
                self.allowed(Access::Write, "exchange", bd.destination.as_str())?;
                self.allowed(Access::Read, "exchange", bd.source.as_str())?;
                self.topic_allowed(false, bd.source.as_str(), bd.routing_key.as_str())?;
                self.allowed_dead_letters(bd.source.as_str(), bd.routing_key.as_str())?;
                let (nowait, cm) = (bd.nowait, (40, 30));
                self.bind(
                    ctx,
                    cm,
                    bd.source.to_string(),
                    Destination::Exchange(bd.destination.as_str().into()),
                    bd.routing_key.to_string(),
                    bd.arguments,
                    true,
                    move |act| {
                        if !nowait {
                            act.send(AMQPClass::Exchange(x::AMQPMethod::BindOk(x::BindOk {})));
                        }
                    },
                );
                Ok(())
            }
            x::AMQPMethod::Unbind(bd) => {
                self.allowed(Access::Write, "exchange", bd.destination.as_str())?;
                self.allowed(Access::Read, "exchange", bd.source.as_str())?;
                self.topic_allowed(false, bd.source.as_str(), bd.routing_key.as_str())?;
                let (nowait, cm) = (bd.nowait, (40, 40));
                let (src, dst) = (bd.source.as_str(), bd.destination.as_str());
                if !src.is_empty()
                    && !dst.is_empty()
                    && (self.vhost.exchange(src).is_none() || self.vhost.exchange(dst).is_none())
                {
                    // as RabbitMQ: unbinding from or to an exchange that is gone (an
                    // auto-delete one that went with its last binding) succeeds; the
                    // default exchange is still refused (403) by the vhost below
                    if !nowait {
                        self.send(AMQPClass::Exchange(x::AMQPMethod::UnbindOk(x::UnbindOk {})));
                    }
                    return Ok(());
                }
                self.bind(
                    ctx,
                    cm,
                    bd.source.to_string(),
                    Destination::Exchange(bd.destination.as_str().into()),
                    bd.routing_key.to_string(),
                    bd.arguments,
                    false,
                    move |act| {
                        if !nowait {
                            act.send(AMQPClass::Exchange(x::AMQPMethod::UnbindOk(x::UnbindOk {})));
                        }
                    },
                );
                Ok(())
            }
            _ => Err(AmqpError::command_invalid("unexpected exchange method")),
        }
    }

    fn exchange_declare(
        &mut self,
        d: x::Declare,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        let name = d.exchange.as_str();
        let nowait = d.nowait;
        let reply = move |act: &ChannelActor| {
            if !nowait {
                act.send(AMQPClass::Exchange(x::AMQPMethod::DeclareOk(
                    x::DeclareOk {},
                )));
            }
        };
        broker_core::declare::check_not_default_exchange(name)?;
        if d.passive {
            if self.vhost.exchange(name).is_none() {
                return Err(AmqpError::not_found(format!(
                    "no exchange '{name}' in vhost '{}'",
                    self.vhost.name
                )));
            }
            reply(self);
            return Ok(());
        }
        self.allowed(Access::Configure, "exchange", name)?;
        if let Some(ae) = string_arg(&d.arguments, "alternate-exchange") {
            self.allowed(Access::Write, "exchange", &ae)?;
            self.allowed(Access::Read, "exchange", name)?;
        }
        // as for an alternate exchange: invalid messages are published there
        if let Some(ie) = string_arg(&d.arguments, "x-schema-invalid-exchange") {
            self.allowed(Access::Write, "exchange", &ie)?;
        }
        let Some(kind) = ExchangeKind::parse(d.kind.as_str()) else {
            return Err(AmqpError::command_invalid(format!(
                "unknown exchange type '{}'",
                d.kind
            )));
        };
        broker_core::declare::check_exchange_declare_name(
            name,
            self.vhost.exchange(name).is_some(),
        )?;
        let spec = ExchangeSpec {
            kind,
            durable: d.durable,
            auto_delete: d.auto_delete,
            internal: d.internal,
            arguments: d.arguments.clone(),
        };
        let v = self.vhost.clone();
        let name = name.to_string();
        self.wait_then(
            ctx,
            (40, 10),
            async move { v.declare_exchange(&name, spec).await },
            move |act, (), _| reply(act),
        );
        Ok(())
    }

    /// A binding from `amq.dead-letter` (ours; routing key = the source queue's name)
    /// must not hand a user the dead letters of queues they may not read: see
    /// `access::Registry::may_read_dead_letters` and docs/compatibility.md.
    fn allowed_dead_letters(&self, source: &str, key: &str) -> Result<(), AmqpError> {
        if source != DEAD_LETTER_EXCHANGE {
            return Ok(());
        }
        let Some(rt) = self.runtime.as_ref() else {
            return Ok(());
        };
        let user = self.shared.user.borrow().clone();
        rt.registry
            .check_dead_letter_binding(&self.vhost.name, &user, key)
    }

    /// Resolves an empty queue name to the channel's last declared queue, as RabbitMQ does.
    pub(crate) fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if !name.is_empty() {
            return Ok(name.to_string());
        }
        self.last_queue
            .clone()
            .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
    }

    pub(crate) fn find_queue(
        &self,
        name: &str,
    ) -> Result<std::sync::Arc<queue::QueueEntry>, AmqpError> {
        let q = self.vhost.queue(name).ok_or_else(|| {
            AmqpError::not_found(format!("no queue '{name}' in vhost '{}'", self.vhost.name))
        })?;
        q.check_access(self.key.connection)?;
        Ok(q)
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(
        &mut self,
        ctx: &mut Context<Self>,
        cm: (u16, u16),
        source: String,
        dest: Destination,
        routing_key: String,
        arguments: broker_wire::types::FieldTable,
        bind: bool,
        then: impl FnOnce(&mut Self) + 'static,
    ) {
        let v = self.vhost.clone();
        self.wait_then(
            ctx,
            cm,
            async move { v.bind(&source, dest, &routing_key, arguments, bind).await },
            move |act, (), _| then(act),
        );
    }

    pub(crate) fn queue_method(
        &mut self,
        m: q::AMQPMethod,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        match m {
            q::AMQPMethod::Declare(d) => self.queue_declare(d, ctx),
            q::AMQPMethod::Bind(bd) => self.queue_bind(bd, ctx),
            q::AMQPMethod::Unbind(bd) => self.queue_unbind(bd, ctx),
            q::AMQPMethod::Purge(p) => self.queue_purge(p, ctx),
            q::AMQPMethod::Delete(d) => self.queue_delete(d, ctx),
            _ => Err(AmqpError::command_invalid("unexpected queue method")),
        }
    }

    fn queue_bind(&mut self, bd: q::Bind, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let name = self.queue_name(bd.queue.as_str())?;
        self.allowed(Access::Write, "queue", &name)?;
        self.allowed(
            Access::Read,
            "exchange",
            broker_core::auth::exchange_resource(bd.exchange.as_str()),
        )?;
        match self.find_queue(&name) {
            Ok(q) => self.queue_bind_to(bd, name, q, ctx),
            Err(_) if self.vhost.clustered() => {
                // a queue declared through another node a moment ago may not be applied
                // here yet: look again once this node applied what the group committed
                let vhost = self.vhost.clone();
                let catch_up = async move {
                    vhost.catch_up().await;
                    Ok(())
                };
                self.wait_then(ctx, (50, 20), catch_up, move |act, (), ctx| {
                    let bound = act
                        .find_queue(&name)
                        .and_then(|q| act.queue_bind_to(bd, name, q, ctx));
                    if let Err(e) = bound {
                        act.fail(e.on(50, 20), ctx);
                    }
                });
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// queue.bind once its queue is found.
    fn queue_bind_to(
        &mut self,
        bd: q::Bind,
        name: String,
        q: std::sync::Arc<queue::QueueEntry>,
        ctx: &mut Context<Self>,
    ) -> Result<(), AmqpError> {
        let rk = if bd.routing_key.as_str().is_empty() && bd.queue.as_str().is_empty() {
            name.clone()
        } else {
            bd.routing_key.to_string()
        };
        self.topic_allowed(false, bd.exchange.as_str(), &rk)?;
        self.allowed_dead_letters(bd.exchange.as_str(), &rk)?;
        let nowait = bd.nowait;
        self.bind(
            ctx,
            (50, 20),
            bd.exchange.to_string(),
            Destination::Queue(q.name.clone()),
            rk,
            bd.arguments,
            true,
            move |act| {
                if !nowait {
                    act.send(AMQPClass::Queue(q::AMQPMethod::BindOk(q::BindOk {})));
                }
            },
        );
        Ok(())
    }

    fn queue_unbind(&mut self, bd: q::Unbind, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let name = self.queue_name(bd.queue.as_str())?;
        self.allowed(Access::Write, "queue", &name)?;
        self.allowed(
            Access::Read,
            "exchange",
            broker_core::auth::exchange_resource(bd.exchange.as_str()),
        )?;
        self.topic_allowed(false, bd.exchange.as_str(), bd.routing_key.as_str())?;
        if let Some(q) = self.vhost.queue(&name) {
            q.check_access(self.key.connection)?;
        }
        if bd.exchange.as_str().is_empty() {
            return Err(AmqpError::access_refused(
                "operation not permitted on the default exchange",
            ));
        }
        if self.vhost.exchange(bd.exchange.as_str()).is_none() || self.vhost.queue(&name).is_none()
        {
            // unbinding what does not exist succeeds, as in RabbitMQ
            self.send(AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})));
            return Ok(());
        }
        self.bind(
            ctx,
            (50, 50),
            bd.exchange.to_string(),
            Destination::Queue(name.as_str().into()),
            bd.routing_key.to_string(),
            bd.arguments,
            false,
            |act| {
                act.send(AMQPClass::Queue(q::AMQPMethod::UnbindOk(q::UnbindOk {})));
            },
        );
        Ok(())
    }

    fn queue_purge(&mut self, p: q::Purge, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let name = self.queue_name(p.queue.as_str())?;
        self.allowed(Access::Read, "queue", &name)?;
        let qe = self.find_queue(&name)?;
        if qe.stream.is_some() {
            return Err(broker_core::queue_type::stream::not_supported(
                "queue.purge",
                &name,
                &self.vhost.name,
            ));
        }
        let nowait = p.nowait;
        self.wait_then(
            ctx,
            (50, 30),
            {
                let local = qe.is_local().then(|| qe.purge());
                let remote = qe.remote_purge();
                async move {
                    match local {
                        Some(purge) => purge.await.map_err(mailbox),
                        None => remote.await,
                    }
                }
            },
            move |act, n, _| {
                if !nowait {
                    act.send(AMQPClass::Queue(q::AMQPMethod::PurgeOk(q::PurgeOk {
                        message_count: n,
                    })));
                }
            },
        );
        Ok(())
    }

    fn queue_delete(&mut self, d: q::Delete, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let name = self.queue_name(d.queue.as_str())?;
        self.allowed(Access::Configure, "queue", &name)?;
        let v = self.vhost.clone();
        let conn = self.key.connection;
        let nowait = d.nowait;
        self.wait_then(
            ctx,
            (50, 40),
            async move { v.delete_queue(&name, d.if_unused, d.if_empty, conn).await },
            move |act, n, _| {
                if !nowait {
                    act.send(AMQPClass::Queue(q::AMQPMethod::DeleteOk(q::DeleteOk {
                        message_count: n,
                    })));
                }
            },
        );
        Ok(())
    }

    fn queue_declare(&mut self, d: q::Declare, ctx: &mut Context<Self>) -> Result<(), AmqpError> {
        let conn = self.key.connection;
        let nowait = d.nowait;
        if d.passive {
            let name = self.queue_name(d.queue.as_str())?;
            let vhost = self.vhost.clone();
            let entry = match self.find_queue(&name) {
                Ok(entry) => Some(entry),
                // declared through another node a moment ago: look again once caught up
                Err(_) if vhost.clustered() => None,
                Err(e) => return Err(e),
            };
            let key = self.key.connection;
            let found = async move {
                let entry = match entry {
                    Some(entry) => entry,
                    None => {
                        vhost.catch_up().await;
                        let q = vhost.queue(&name).ok_or_else(|| {
                            AmqpError::not_found(format!(
                                "no queue '{name}' in vhost '{}'",
                                vhost.name
                            ))
                        })?;
                        q.check_access(key)?;
                        q
                    }
                };
                let name = entry.name.to_string();
                Ok((name, declare_ok(entry).await?))
            };
            self.wait_then(ctx, (50, 10), found, move |act, (name, ok), _| {
                act.last_queue = Some(name);
                act.reply_declare_ok(ok, nowait)
            });
            return Ok(());
        }
        let name = if d.queue.as_str().is_empty() {
            let t = broker_core::queue_type::of_arguments(&d.arguments);
            if !t.capabilities().server_named {
                return Err(AmqpError::precondition_failed(format!(
                    "Cannot declare a server-named queue for type rabbit_{}_queue",
                    t.name()
                )));
            }
            generated_name()
        } else {
            let n = d.queue.to_string();
            broker_core::declare::check_queue_declare_name(&n, self.vhost.queue(&n).is_some())?;
            n
        };
        self.allowed(Access::Configure, "queue", &name)?;
        if let Some(dlx) = string_arg(&d.arguments, "x-dead-letter-exchange") {
            self.allowed(
                Access::Write,
                "exchange",
                broker_core::auth::exchange_resource(&dlx),
            )?;
            self.allowed(Access::Read, "queue", &name)?;
        }
        let spec = QueueSpec {
            durable: d.durable,
            exclusive_owner: d.exclusive.then_some(conn),
            auto_delete: d.auto_delete,
            arguments: d.arguments.clone(),
            worker: Some(actix::Arbiter::current()),
        };
        // the name is this channel's last queue at once: a pipelined method naming ""
        // waits behind this declare anyway
        self.last_queue = Some(name.clone());
        let v = self.vhost.clone();
        self.wait_then(
            ctx,
            (50, 10),
            async move { declare_ok(v.declare_queue(&name, spec, conn).await?).await },
            move |act, ok, _| act.reply_declare_ok(ok, nowait),
        );
        Ok(())
    }

    fn reply_declare_ok(
        &mut self,
        (queue, ready, consumers): (ShortString, u32, u32),
        nowait: bool,
    ) {
        if !nowait {
            self.send(AMQPClass::Queue(q::AMQPMethod::DeclareOk(q::DeclareOk {
                queue,
                message_count: ready,
                consumer_count: consumers,
            })));
        }
    }
}

/// What queue.declare-ok reports: the queue's name, ready messages and consumers.
async fn declare_ok(
    entry: std::sync::Arc<queue::QueueEntry>,
) -> Result<(ShortString, u32, u32), AmqpError> {
    let name = shortstr("queue name", &entry.name)?;
    if !entry.is_local() {
        // its counts are on its home node
        let (ready, consumers) = entry.remote_stats().await?;
        return Ok((name, ready, consumers));
    }
    let (ready, consumers, _) = entry
        .addr
        .send(queue::Stats { declare: true })
        .await
        .map_err(mailbox)?;
    Ok((name, ready, consumers))
}
