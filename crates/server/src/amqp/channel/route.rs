//! Routing a publish: the channel's route cache (valid while the vhost's topology version
//! is unchanged), then the exchanges' binding snapshots on a miss; and the topic
//! permission check on the routing key.

use super::ChannelActor;
use crate::broker::queue::QueueEntry;
use crate::broker::schemas::Attached;
use broker_core::AmqpError;
use broker_wire::protocol::basic::AMQPProperties;
use std::sync::Arc;

/// A route's queues and its exchange's schema.
type Found = (Arc<[Arc<QueueEntry>]>, Option<Arc<Attached>>);

/// Route cache entries per channel before it is cleared.
const ROUTE_CACHE_MAX: usize = 4096;

impl ChannelActor {
    /// The queues a message goes to, from the route cache or the exchanges' snapshots,
    /// and the exchange's schema (cached with the route: an exchange without one costs
    /// the publish one branch on `None`).
    pub(super) fn route(
        &mut self,
        exchange: &str,
        routing_key: &str,
        properties: &AMQPProperties,
    ) -> Result<Found, AmqpError> {
        let version = self.vhost.version();
        if version != self.routes.version {
            self.routes.by_exchange.clear();
            self.routes.entries = 0;
            self.routes.last = None;
            self.routes.version = version;
        }
        if let Some(r) = &self.routes.last {
            if same(&r.routing_key, routing_key) && same(&r.exchange, exchange) {
                return Ok((r.queues.clone(), r.schema.clone()));
            }
        }
        if let Some(r) = self
            .routes
            .by_exchange
            .get(exchange)
            .and_then(|m| m.get(routing_key))
        {
            let found = (r.queues.clone(), r.schema.clone());
            self.routes.last = Some(r.clone());
            return Ok(found);
        }
        let mut out = Vec::new();
        let cacheable = crate::broker::publish::client_route(
            &self.vhost,
            exchange,
            routing_key,
            Some(properties),
            &mut out,
        )?;
        let queues: Arc<[Arc<QueueEntry>]> = out.into();
        let schema = crate::broker::publish::exchange_schema(&self.vhost, exchange);
        if cacheable {
            let r = super::Route {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                queues: queues.clone(),
                schema: schema.clone(),
            };
            if self.routes.entries >= ROUTE_CACHE_MAX {
                self.routes.by_exchange.clear();
                self.routes.entries = 0;
            }
            self.routes.entries += 1;
            self.routes
                .by_exchange
                .entry(exchange.to_string())
                .or_default()
                .insert(routing_key.to_string(), r);
        }
        Ok((queues, schema))
    }
}

impl ChannelActor {
    /// Refuses with 403 ACCESS_REFUSED unless the user's topic permission on `exchange`
    /// (a topic exchange) lets it write (publish) or read (bind) `key`. A user without
    /// topic permissions in the vhost costs one atomic load and compare per publish.
    pub(crate) fn topic_allowed(
        &mut self,
        write: bool,
        exchange: &str,
        key: &str,
    ) -> Result<(), AmqpError> {
        let Some(rt) = self.runtime.as_ref() else {
            return Ok(());
        };
        let table = &rt.registry.topic_perms;
        let version = table.version();
        if self.topic_cache.0 != version {
            let user = self.shared.user.borrow().clone();
            self.topic_cache = (version, table.of(&self.vhost.name, &user));
        }
        let Some(topics) = &self.topic_cache.1 else {
            return Ok(());
        };
        if !topics.contains_key(exchange)
            || !crate::broker::topic_perms::is_topic(&self.vhost, exchange)
        {
            return Ok(());
        }
        let user = self.shared.user.borrow().clone();
        crate::broker::topic_perms::check(topics, write, exchange, key, &self.vhost.name, &user)
    }
}

/// String equality for the route cache's last-route check. Measured, not reasoned: with
/// `==` here 1p1c 16 B ran at 1.91–2.07M msg/s against 2.24–2.49M with this function
/// (four alternating 4 s rounds each, same machine); both compile to a `bcmp` call, and
/// the difference is not understood.
#[inline]
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}
