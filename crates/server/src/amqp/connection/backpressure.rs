//! Backpressure on reading: whether the connection must stop reading (its channels are
//! behind, its client does not read what it is sent, a queue it publishes to is hot, the
//! memory alarm), how it holds (not read, wait for a wake-up, or read at the pace floor),
//! and how it resumes.

use super::*;

impl Connection {
    /// Whether reading must pause (backpressure), and how. Hot queues get this connection as a
    /// waiter, to wake it when they have taken their inbox in.
    pub(super) fn throttled(&mut self, ctx: &mut Context<Self>) -> Hold {
        if self.shared.pending_commands.get() > MAX_PENDING_COMMANDS {
            // only this pause is the channels' to end
            self.shared.read_paused.set(true);
            return Hold::Wait;
        }
        if self.shared.out_len() > OUT_HIGH {
            return Hold::Wait;
        }
        if self.state == State::Open && self.shared.published.get() {
            let alarm = self.rt.memory.alarm();
            if alarm != self.blocked_sent && self.client.connection_blocked {
                self.blocked_sent = alarm;
                if alarm {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Blocked(
                            connection::Blocked {
                                reason: "low on memory".into(),
                            },
                        )),
                    );
                } else {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::Unblocked(
                            connection::Unblocked {},
                        )),
                    );
                }
            }
            if alarm {
                return Hold::Wait;
            }
            // the pace floor's timer lets a paced connection read once more
            let forced = std::mem::take(&mut self.force_read);
            let mut hot = self.shared.hot.borrow_mut();
            hot.retain(|q| q.still_hot());
            if !hot.is_empty() {
                let me = ctx.address().recipient::<ResumeRead>();
                let (mut over_credit, mut paced) = (false, false);
                for q in hot.iter() {
                    if q.wait_for_room(self.id, me.clone()) {
                        if q.over_credit() {
                            over_credit = true;
                        } else {
                            paced = true;
                        }
                    }
                }
                if over_credit || (paced && !forced) {
                    return if over_credit { Hold::Wait } else { Hold::Paced };
                }
                if !paced {
                    hot.clear();
                }
            }
        }
        Hold::Read
    }

    pub(super) fn schedule_read(&mut self, ctx: &mut Context<Self>) {
        if self.reader.is_none() || matches!(self.state, State::Closed | State::Silenced) {
            return;
        }
        let hold = self.throttled(ctx);
        if hold != Hold::Read {
            self.flush(ctx);
            self.pause(hold == Hold::Paced, ctx);
            return;
        }
        // throttled() may just have queued connection.unblocked: send it now, or a client
        // that waits for it before publishing again would wait forever
        if self.shared.out_len() > 0 {
            self.flush(ctx);
        }
        let Some(mut reader) = self.reader.take() else {
            return;
        };
        let mut buf = std::mem::take(&mut self.rbuf);
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        ctx.spawn(
            async move {
                let r = reader.read_buf(&mut buf).await;
                (reader, buf, r)
            }
            .into_actor(self)
            .map(|(reader, buf, r), act, ctx| {
                act.reader = Some(reader);
                act.rbuf = buf;
                if let Ok(n) = r {
                    act.rt
                        .bytes_in
                        .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                match r {
                    Ok(0) | Err(_) => {
                        if !matches!(
                            act.state,
                            State::Closed | State::Closing | State::ClosedByPeer
                        ) {
                            let _e = act.span.enter();
                            info!("client closed the socket");
                        }
                        ctx.stop();
                    }
                    Ok(_) => {
                        act.last_read = Instant::now();
                        let res = catch_unwind(AssertUnwindSafe(|| act.process_input(ctx)));
                        if res.is_err() {
                            act.fail(AmqpError::internal("internal error"), ctx);
                        }
                        act.flush(ctx);
                        act.schedule_read(ctx);
                    }
                }
            }),
        );
    }

    /// Stops reading until something that held it back has moved (see [`ResumeRead`]).
    pub(super) fn pause(&mut self, paced: bool, ctx: &mut Context<Self>) {
        self.paused = true;
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        // a connection held only by pacing reads again after the floor, whatever the
        // queue's state: pacing slows publishers, it never stops them
        let (after, force) = if paced {
            (PACE_FLOOR, true)
        } else {
            (PAUSE_RECHECK, false)
        };
        self.retry = Some(ctx.run_later(after, move |a, ctx| {
            a.retry = None;
            a.force_read = force;
            a.resume(ctx);
        }));
    }

    /// Reads again if paused (and pauses again if still held back).
    pub(super) fn resume(&mut self, ctx: &mut Context<Self>) {
        if !self.paused {
            return;
        }
        self.paused = false;
        self.shared.read_paused.set(false);
        if let Some(h) = self.retry.take() {
            ctx.cancel_future(h);
        }
        self.schedule_read(ctx);
    }
}
