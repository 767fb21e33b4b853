//! Browsing a queue's ready messages without taking them (the management API's
//! `GET /api/queues/{vhost}/{name}/messages`): copies of the messages at positions
//! `offset..offset + count` in delivery order, read from memory, from the queue's spill
//! files, from the store (a paged persisted message) or from the quorum queue's state
//! machine on this node. Nothing is delivered, requeued or reordered and no
//! redelivered flag changes: the queue is as it was.

use super::*;

/// Most messages one browse returns.
pub const PEEK_MAX: usize = 100;

/// Asks for copies of ready messages.
#[derive(Message)]
#[rtype(result = "Result<Peeked, AmqpError>")]
pub struct Peek {
    /// Position of the first (0: the head).
    pub offset: usize,
    /// How many at most (capped at [`PEEK_MAX`]).
    pub count: usize,
}

/// What a browse found.
#[derive(Debug, Default)]
pub struct Peeked {
    /// Ready messages in the queue.
    pub total: u64,
    /// Each message with its redelivered flag, in delivery order.
    pub items: Vec<(bool, Arc<Message>)>,
}

impl Handler<Peek> for QueueActor {
    type Result = Result<Peeked, AmqpError>;
    fn handle(&mut self, msg: Peek, ctx: &mut Context<Self>) -> Self::Result {
        let count = msg.count.min(PEEK_MAX);
        if self.stream.is_some() {
            return Err(AmqpError::precondition_failed(format!(
                "browsing is not supported by stream queues (queue '{}'); read it with a stream consumer from an offset",
                self.name
            )));
        }
        if self.deleted {
            return Err(AmqpError::not_found(format!(
                "queue '{}' is deleted",
                self.name
            )));
        }
        if self.quorum.is_some() {
            return self.quorum_peek(msg.offset, count);
        }
        self.operate(ctx, |a, _| {
            let entries = a.state.peek(msg.offset, count).map_err(|e| {
                AmqpError::internal(format!("cannot read the queue's messages: {e}"))
            })?;
            let store = a.stored();
            let mut items = Vec::with_capacity(entries.len());
            for e in entries {
                let m = match &e.msg {
                    Slot::Loaded(m) => m.clone(),
                    Slot::Paged { persist_id, .. } => stored::page_in(&store, *persist_id)
                        .map_err(|err| {
                            AmqpError::internal(format!("cannot read a stored message: {err}"))
                        })?,
                };
                items.push((e.redelivered, m));
            }
            Ok(Peeked {
                total: a.state.ready_count() as u64,
                items,
            })
        })
    }
}

impl QueueActor {
    /// A quorum queue's browse: from the state machine as this member applied it.
    fn quorum_peek(&self, offset: usize, count: usize) -> Result<Peeked, AmqpError> {
        let Some(g) = self.quorum.as_ref().and_then(|s| s.group()) else {
            return Err(AmqpError::internal("the quorum queue's group is not open"));
        };
        let (total, entries) = g
            .sm
            .peek(offset, count)
            .map_err(|e| AmqpError::internal(format!("cannot read the queue's messages: {e}")))?;
        let items = entries
            .into_iter()
            .filter_map(|e| Some((e.redelivered, e.msg.loaded()?.clone())))
            .collect();
        Ok(Peeked { total, items })
    }
}
