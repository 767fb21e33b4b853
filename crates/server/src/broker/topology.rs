//! The operations that change a vhost's topology: exchange and queue declare and delete,
//! bind and unbind, and the deletions that follow from others (auto-delete, x-expires,
//! the exclusive queues of a closed connection).
//!
//! Each holds the locks of the names it touches (`locks.rs`) for its whole course, so on
//! one name they happen one after the other, as in RabbitMQ's metadata store. Durable
//! changes go through the metadata group (`meta.rs`): the operation decides against the
//! applied state, proposes a guarded transaction, and the group's apply writes the store
//! and materializes the change (`materialize.rs`), after which the operation answers;
//! on a conflict it decides again. Transient exchanges, queues and bindings stay local
//! to the node (docs/design/cluster.md §2).

use crate::broker::exchange::{self, ExchangeEntry};
use crate::broker::locks::Resource;
use crate::broker::meta::{too_many_conflicts, MAX_RETRIES};
use crate::broker::queue::QueueEntry;
use crate::broker::vhost::{ExchangeSpec, QueueSpec, VHost};
use broker_core::declare::{self, ExchangeDeclare, QueueDeclare};
use broker_core::routing::{Binding, Destination};
use broker_core::AmqpError;
use broker_wire::types::FieldTable;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn unavailable(what: &str) -> impl FnOnce(actix::MailboxError) -> AmqpError + '_ {
    move |_| AmqpError::internal(format!("{what} unavailable"))
}

impl VHost {
    /// exchange.declare (non-passive): creates it, or checks an existing one is equivalent.
    pub async fn declare_exchange(&self, name: &str, spec: ExchangeSpec) -> Result<(), AmqpError> {
        let _held = self.locks.lock(&[Resource::Exchange(name)]).await;
        for _ in 0..MAX_RETRIES {
            if let Some(x) = self.exchange(name) {
                if !x.dying.load(Ordering::Acquire) {
                    return self.check_exchange_equivalent(&x, name, &spec);
                }
                // auto-deleted a moment ago: finish that, then declare anew
                self.forget_exchange_locked(&x).await?;
            }
            spec.kind
                .validate_declare(&spec.arguments, name, &self.name)?;
            self.node
                .schemas
                .check_declared(&spec.arguments, name, &self.name)?;
            let Some(s) = self.storage().filter(|_| spec.durable) else {
                self.create_exchange(name, spec);
                return Ok(());
            };
            // applied: the materializer created it
            if self.propose_exchange(&s, name, &spec).await? {
                return Ok(());
            }
        }
        Err(too_many_conflicts("exchange declare"))
    }

    fn check_exchange_equivalent(
        &self,
        x: &ExchangeEntry,
        name: &str,
        spec: &ExchangeSpec,
    ) -> Result<(), AmqpError> {
        let cur = ExchangeDeclare {
            kind: x.kind,
            durable: x.durable,
            auto_delete: x.auto_delete,
            internal: x.internal,
            arguments: &x.arguments,
        };
        let new = ExchangeDeclare {
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: &spec.arguments,
        };
        declare::check_exchange_equivalent(name, &self.name, &cur, &new)
    }

    /// queue.declare (non-passive): creates it or checks equivalence. Returns the entry.
    pub async fn declare_queue(
        &self,
        name: &str,
        spec: QueueSpec,
        conn: u64,
    ) -> Result<Arc<QueueEntry>, AmqpError> {
        let _held = self.locks.lock(&[Resource::Queue(name)]).await;
        for _ in 0..MAX_RETRIES {
            if let Some(q) = self.queue(name) {
                if !q.deleted.load(Ordering::Acquire) {
                    self.check_queue_equivalent(&q, name, &spec, conn)?;
                    return Ok(q);
                }
                // auto-deleted or expired a moment ago: finish that, then declare anew
                self.forget_queue_locked(&q).await?;
            }
            self.check_queue_declare(name, &spec)?;
            let durable = spec.durable && spec.exclusive_owner.is_none();
            let Some(s) = self.storage().filter(|_| durable) else {
                return self.create_queue(name, spec, None);
            };
            if let Some(q) = self.propose_queue(&s, name, &spec).await? {
                return Ok(q);
            }
        }
        Err(too_many_conflicts("queue declare"))
    }

    /// What a new queue must pass: its type's rules and the vhost's queue limit.
    fn check_queue_declare(&self, name: &str, spec: &QueueSpec) -> Result<(), AmqpError> {
        broker_core::queue_type::validate_declare(&spec.declare(name, &self.name))?;
        if let Some(max) = self
            .node
            .registry
            .vhost(&self.name)
            .and_then(|r| r.limits.max_queues)
        {
            if self.queues.len() as u64 >= max {
                return Err(AmqpError::precondition_failed(format!(
                    "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
                    self.name
                )));
            }
        }
        Ok(())
    }

    fn check_queue_equivalent(
        &self,
        q: &QueueEntry,
        name: &str,
        spec: &QueueSpec,
        conn: u64,
    ) -> Result<(), AmqpError> {
        q.check_access(conn)?;
        let cur = QueueDeclare {
            name,
            vhost: &self.name,
            durable: q.durable,
            exclusive: q.exclusive_owner.is_some(),
            auto_delete: q.auto_delete,
            arguments: &q.arguments,
        };
        declare::check_queue_equivalent(&cur, &spec.declare(name, &self.name))
    }

    /// queue.delete. Deleting a queue that does not exist succeeds with 0, as in RabbitMQ.
    pub async fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        conn: u64,
    ) -> Result<u32, AmqpError> {
        let _held = self.locks.lock(&[Resource::Queue(name)]).await;
        let Some(q) = self.queue(name) else {
            return Ok(0);
        };
        q.check_access(conn)?;
        let n = if q.is_local() {
            q.delete(if_unused, if_empty)
                .await
                .map_err(unavailable("queue"))??
        } else {
            // the queue's part at its home; the record goes through the group here
            q.remote_delete(if_unused, if_empty).await?
        };
        self.forget_queue_locked(&q).await?;
        Ok(n)
    }

    /// exchange.delete: the default and amq.* exchanges are refused with 403.
    pub async fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), AmqpError> {
        declare::check_exchange_delete_name(name, &self.name)?;
        let _held = self.locks.lock(&[Resource::Exchange(name)]).await;
        // deleting an exchange that does not exist succeeds, as in RabbitMQ
        let Some(x) = self.exchange(name) else {
            return Ok(());
        };
        x.addr
            .send(exchange::Delete { if_unused })
            .await
            .map_err(unavailable("exchange"))??;
        self.forget_exchange_locked(&x).await
    }

    /// A queue deleted itself (auto-delete, x-expires): forget it, unless a declare has
    /// already done so and made a new queue of the name.
    pub async fn forget_queue(&self, name: &str) {
        let _held = self.locks.lock(&[Resource::Queue(name)]).await;
        if let Some(q) = self.queue(name) {
            if q.deleted.load(Ordering::Acquire) {
                if let Err(e) = self.forget_queue_locked(&q).await {
                    tracing::error!(
                        queue = name,
                        "cannot forget a deleted queue: {}",
                        e.reply_text()
                    );
                }
            }
        }
    }

    /// An exchange marked itself for auto-delete while a queue deletion removed its
    /// last binding: forget it, unless it was forgotten (or declared anew) meanwhile.
    async fn forget_dying_exchange(&self, name: &str) {
        let _held = self.locks.lock(&[Resource::Exchange(name)]).await;
        if let Some(x) = self.exchange(name) {
            if x.dying.load(Ordering::Acquire) {
                if let Err(e) = self.forget_exchange_locked(&x).await {
                    tracing::error!(
                        exchange = name,
                        "cannot forget an auto-deleted exchange: {}",
                        e.reply_text()
                    );
                }
            }
        }
    }

    /// Exclusive queues of a closed connection go away.
    pub async fn connection_closed(&self, conn: u64) {
        let mine: Vec<Arc<QueueEntry>> = self
            .queues
            .iter()
            .filter(|q| q.exclusive_owner == Some(conn))
            .map(|q| q.value().clone())
            .collect();
        for q in mine {
            let _held = self.locks.lock(&[Resource::Queue(&q.name)]).await;
            let _ = q.delete(false, false).await;
            // exclusive queues are never durable: this is local
            let _ = self.forget_queue_locked(&q).await;
        }
    }

    /// Removes every binding to `dest` from every exchange (after a durable deletion:
    /// waits until every exchange took the materializer's removal). An exchange
    /// auto-deleted by losing its last binding this way is forgotten in a task of its
    /// own, under its own lock (taking it here, with the caller's held, could deadlock).
    async fn remove_destination(&self, dest: &Destination) {
        for x in self.exchanges() {
            if x.addr
                .send(exchange::RemoveDestination(dest.clone()))
                .await
                .is_err()
            {
                continue;
            }
            if x.dying.load(Ordering::Acquire) {
                if let Some(me) = self.me.upgrade() {
                    let name = x.name.clone();
                    actix::spawn(async move { me.forget_dying_exchange(&name).await });
                }
            }
        }
    }

    /// Removes a queue from the vhost with every binding to it; the caller holds the
    /// name's lock. A durable queue's record goes through the metadata group, whose
    /// materializer forgets it (a failure leaves it marked deleted, so the next declare
    /// of the name tries again). Nothing if `q` is no longer the vhost's queue.
    async fn forget_queue_locked(&self, q: &Arc<QueueEntry>) -> Result<(), AmqpError> {
        if let (Some(id), Some(s)) = (q.store_id, self.storage()) {
            let gone = self.unpersist_queue(&s, &q.name, id).await;
            if gone.as_ref().is_ok_and(|g| *g) {
                self.remove_destination(&Destination::Queue(q.name.clone()))
                    .await;
                self.bump();
                return Ok(());
            }
            if let Err(e) = gone {
                q.deleted.store(true, Ordering::Release);
                return Err(e);
            }
        }
        if self
            .queues
            .remove_if(&q.name, |_, v| Arc::ptr_eq(v, q))
            .is_none()
        {
            return Ok(());
        }
        q.deleted.store(true, Ordering::Release);
        self.bump();
        self.remove_destination(&Destination::Queue(q.name.clone()))
            .await;
        self.bump();
        Ok(())
    }

    /// Removes an exchange with its own bindings and every exchange-to-exchange binding
    /// to it; the caller holds the name's lock. A durable exchange's record goes through
    /// the metadata group, whose materializer forgets it.
    async fn forget_exchange_locked(&self, x: &Arc<ExchangeEntry>) -> Result<(), AmqpError> {
        let dest = Destination::Exchange(x.name.clone());
        if let (true, Some(s)) = (x.durable, self.storage()) {
            if self.unpersist_exchange(&s, &x.name).await? {
                self.remove_destination(&dest).await;
                self.bump();
                return Ok(());
            }
        }
        if self
            .exchanges
            .remove_if(&x.name, |_, v| Arc::ptr_eq(v, x))
            .is_none()
        {
            return Ok(());
        }
        x.dying.store(true, Ordering::Release);
        x.close_room();
        self.bump();
        self.remove_destination(&dest).await;
        self.bump();
        Ok(())
    }

    /// queue.bind and exchange.bind (bind = true) or their unbinds. An unbind of what
    /// does not exist (source, destination or binding) succeeds, as in RabbitMQ.
    pub async fn bind(
        &self,
        source: &str,
        dest: Destination,
        routing_key: &str,
        arguments: FieldTable,
        bind: bool,
    ) -> Result<(), AmqpError> {
        declare::check_not_default_exchange(source)?;
        if let Destination::Exchange(d) = &dest {
            declare::check_not_default_exchange(d)?;
        }
        let dest_name = match &dest {
            Destination::Queue(q) => Resource::Queue(q),
            Destination::Exchange(e) => Resource::Exchange(e),
        };
        let _held = self
            .locks
            .lock(&[Resource::Exchange(source), dest_name])
            .await;
        let mut ends = self.bind_ends(source, &dest, bind);
        if !matches!(ends, Ok(Some(_))) && self.catch_up().await {
            // an end declared through another node a moment ago may not be applied
            // here yet: look again once this node has applied what the group committed
            ends = self.bind_ends(source, &dest, bind);
        }
        let Some(x) = ends? else {
            // unbinding what does not exist succeeds, as in RabbitMQ
            return Ok(());
        };
        if bind {
            x.kind
                .routing_kind(&x.arguments)
                .validate_binding(routing_key, &arguments)?;
        }
        let durable = x.durable && self.is_durable(&dest);
        let b = Binding {
            destination: dest,
            routing_key: routing_key.into(),
            arguments,
        };
        if let (true, Some(s)) = (durable, self.storage()) {
            self.propose_bind(&s, &x, b, bind).await?;
        } else {
            send_binding(&x, b, bind).await?;
        }
        if !bind && x.dying.load(Ordering::Acquire) {
            // its last binding went: auto-delete, in the same step as the unbind
            self.forget_exchange_locked(&x).await?;
        }
        self.bump();
        Ok(())
    }

    /// A durable binding's change through the metadata group; then the same message to
    /// the exchange, which finds the materializer's change done before it (the
    /// exchange's mailbox is in order): the answer comes once routing has it.
    async fn propose_bind(
        &self,
        s: &crate::broker::runtime::Storage,
        x: &Arc<ExchangeEntry>,
        b: Binding,
        bind: bool,
    ) -> Result<(), AmqpError> {
        if bind && x.dying.load(Ordering::Acquire) {
            return Err(AmqpError::not_found(format!(
                "no exchange '{}' in vhost '{}'",
                x.name, self.name
            )));
        }
        let mut done = false;
        for _ in 0..MAX_RETRIES {
            if self.propose_binding(s, &x.name, &b, bind).await? {
                done = true;
                break;
            }
        }
        if !done {
            return Err(too_many_conflicts("binding"));
        }
        send_binding(x, b, bind).await
    }

    /// The source exchange of a bind or unbind, once both ends are known to exist: 404
    /// naming the missing one for a bind, `None` (nothing to do) for an unbind.
    fn bind_ends(
        &self,
        source: &str,
        dest: &Destination,
        bind: bool,
    ) -> Result<Option<Arc<ExchangeEntry>>, AmqpError> {
        let dest_exists = match dest {
            Destination::Queue(q) => self.queue(q).is_some(),
            Destination::Exchange(e) => self.exchange(e).is_some(),
        };
        let source_x = self.exchange(source);
        if !bind && (!dest_exists || source_x.is_none()) {
            return Ok(None);
        }
        if !dest_exists {
            return Err(match dest {
                Destination::Queue(q) => {
                    AmqpError::not_found(format!("no queue '{q}' in vhost '{}'", self.name))
                }
                Destination::Exchange(e) => {
                    AmqpError::not_found(format!("no exchange '{e}' in vhost '{}'", self.name))
                }
            });
        }
        match source_x {
            Some(x) => Ok(Some(x)),
            None => Err(AmqpError::not_found(format!(
                "no exchange '{source}' in vhost '{}'",
                self.name
            ))),
        }
    }
}

/// Hands a binding (bind) or its removal (unbind) to the source exchange's actor; the
/// answer comes once routing has it.
async fn send_binding(x: &ExchangeEntry, b: Binding, bind: bool) -> Result<(), AmqpError> {
    if bind {
        x.addr
            .send(exchange::Bind(b))
            .await
            .map_err(unavailable("exchange"))??;
    } else {
        x.addr
            .send(exchange::Unbind(b))
            .await
            .map_err(unavailable("exchange"))?;
    }
    Ok(())
}
