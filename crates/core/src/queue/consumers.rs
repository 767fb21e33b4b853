//! A queue's consumers: subscribing and cancelling, priority order, single active
//! consumer, and the consumer timeout. Deliveries pick from them in `next_delivery`.

use super::*;

impl<C> QueueState<C> {
    /// Number of consumers.
    pub fn consumer_count(&self) -> usize {
        self.consumers.len()
    }

    /// Whether a consumer ever subscribed.
    pub fn had_consumer(&self) -> bool {
        self.had_consumer
    }

    /// The consumers.
    pub fn consumers(&self) -> &[Consumer<C>] {
        &self.consumers
    }

    /// Adds a consumer, enforcing exclusivity as RabbitMQ does (403 ACCESS_REFUSED).
    pub fn add_consumer(
        &mut self,
        c: Consumer<C>,
        queue_name: &str,
        vhost: &str,
    ) -> Result<(), AmqpError> {
        if self.consumers.iter().any(|x| x.exclusive) || (c.exclusive && !self.consumers.is_empty())
        {
            return Err(AmqpError::access_refused(format!(
                "queue '{queue_name}' in vhost '{vhost}' in exclusive use"
            )));
        }
        if self.args.single_active_consumer && self.active.is_none() {
            self.active = Some((c.channel, c.tag.clone()));
        }
        // highest priority first; a newcomer goes after its equals
        let pos = self.consumers.partition_point(|x| x.priority >= c.priority);
        if pos < self.next_consumer {
            self.next_consumer += 1;
        }
        self.consumers.insert(pos, c);
        self.had_consumer = true;
        Ok(())
    }

    /// Removes a consumer; returns it if it existed.
    pub fn remove_consumer(&mut self, channel: ChannelKey, tag: &str) -> Option<Consumer<C>> {
        let pos = self
            .consumers
            .iter()
            .position(|c| c.channel == channel && &*c.tag == tag)?;
        if pos < self.next_consumer {
            self.next_consumer -= 1;
        }
        let c = self.consumers.remove(pos);
        self.pick_active();
        Some(c)
    }

    /// Consumers holding a delivery unacked for longer than `timeout_ms`.
    pub fn timed_out_consumers(&self, timeout_ms: u64) -> Vec<(ChannelKey, Arc<str>)> {
        let mut out: Vec<(ChannelKey, Arc<str>)> = Vec::new();
        for u in self.unacked.values() {
            if let Some(tag) = &u.consumer {
                if self.now.saturating_sub(u.at) > timeout_ms
                    && !out.iter().any(|(c, t)| *c == u.channel && t == tag)
                {
                    out.push((u.channel, tag.clone()));
                }
            }
        }
        // the map's order is arbitrary; a replicated queue needs one order everywhere
        out.sort();
        out
    }

    /// Requeues (as redelivered) what one consumer holds unacked, after it was cancelled
    /// for a consumer timeout. Returns how many.
    pub fn requeue_consumer(&mut self, channel: ChannelKey, tag: &str) -> usize {
        let mut ids: Vec<MsgId> = self
            .unacked
            .iter()
            .filter(|(_, u)| u.channel == channel && u.consumer.as_deref() == Some(tag))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        self.requeue(&ids, true)
    }
}
