//! The read gate: the one place that decides whether a connection reads its socket.
//! A fast client is slowed by not being read (TCP pushes back), never by buffering, and
//! the reasons to stop come from many places: the connection's channels, its own write
//! buffer, the memory alarm, the queues it publishes to. The gate holds every one of them
//! and says, when reading must stop, what will wake the connection; the connection asks
//! it before each read and tells it when it was woken.

use super::Connection;
use crate::amqp::shared::{ConnShared, OUT_HIGH};
use crate::broker::messages::ResumeRead;
use actix::prelude::*;
use broker_wire::protocol::{connection, AMQPClass};
use std::rc::Rc;
use std::time::Duration;

/// The longest a connection held only by a paced queue waits before it reads once more.
pub(super) const PACE_FLOOR: Duration = Duration::from_millis(2);

/// How long a held connection waits before it checks again on its own. Channels, hot
/// queues and finished writes wake it sooner; the timer covers the memory alarm.
pub(super) const PAUSE_RECHECK: Duration = Duration::from_millis(10);

/// Why reading is held, which says what wakes it. Every hold also has the re-check timer
/// ([`Hold::recheck_after`]) as its safety net.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// More than [`ConnShared::pending_limit`] commands were handed to channels and not yet
    /// processed: the channel that brings them back under half sends [`ResumeRead`].
    Channels,
    /// The write buffer is over [`OUT_HIGH`] (the client does not read what it is sent):
    /// the write that brings it back under wakes the connection.
    Writes,
    /// A resource alarm (memory or disk) is on: only the re-check timer, which looks at
    /// the alarms again.
    Memory,
    /// A queue this connection published to is over its credit: the queue wakes it
    /// (`Inbox::wake_waiters`) once it has taken its inbox in.
    QueueCredit,
    /// A queue this connection published to is paced: the queue wakes it, or the pace
    /// floor lets one more read through (pacing slows publishers, it never stops them).
    Paced,
}

impl Hold {
    /// When the gate looks again on its own.
    fn recheck_after(self) -> Duration {
        match self {
            Hold::Paced => PACE_FLOOR,
            _ => PAUSE_RECHECK,
        }
    }
}

/// Every reason a connection stops reading, and the state of the hold.
pub(super) struct ReadGate {
    /// The channels' counters and notes (pending commands, hot queues, whether anything
    /// was published) and the write buffer.
    shared: Rc<ConnShared>,
    /// The client announced the `connection.blocked` capability: only such clients are
    /// told about the memory alarm.
    tells_blocked: bool,
    /// What the client was last told: `connection.blocked` (true) or nothing / `unblocked`.
    blocked_sent: bool,
    /// Reading is held; a wake-up ([`ResumeRead`], a finished write, the timer) releases it.
    held: bool,
    /// The re-check timer of the current hold.
    recheck: Option<SpawnHandle>,
    /// The pace floor's timer fired: the next check lets pacing pass once.
    pace_pass: bool,
    /// When reading was last held (refreshed by every re-check while it stays held): the
    /// heartbeat monitor does not count the time the broker was not reading against the
    /// client, as RabbitMQ pauses its monitor while a connection is blocked.
    last_held: Option<std::time::Instant>,
}

impl ReadGate {
    /// An open gate for a fresh connection.
    pub(super) fn new(shared: Rc<ConnShared>) -> Self {
        Self {
            shared,
            tells_blocked: false,
            blocked_sent: false,
            held: false,
            recheck: None,
            pace_pass: false,
            last_held: None,
        }
    }

    /// Records whether the client understands `connection.blocked` (from start-ok).
    pub(super) fn client_understands_blocked(&mut self, yes: bool) {
        self.tells_blocked = yes;
    }

    /// May the connection read now? `None` if so; otherwise why not, which says what
    /// wakes it. `publishing` is whether the connection is open and has published (the
    /// memory alarm and hot queues hold publishers only). A memory alarm change queues
    /// `connection.blocked`/`unblocked` in the write buffer, once per change; hot queues
    /// register `me` (built only if needed) to wake the connection.
    pub(super) fn check(
        &mut self,
        publishing: bool,
        alarm: Option<&'static str>,
        me: impl FnOnce() -> Recipient<ResumeRead>,
    ) -> Option<Hold> {
        if self.shared.pending_commands.get() > self.shared.pending_limit() {
            // only this hold is the channels' to end: they look at this flag
            self.shared.read_paused.set(true);
            return Some(Hold::Channels);
        }
        if self.shared.out_len() > OUT_HIGH {
            return Some(Hold::Writes);
        }
        if !publishing {
            return None;
        }
        self.tell_alarm(alarm);
        if alarm.is_some() {
            return Some(Hold::Memory);
        }
        let pass = std::mem::take(&mut self.pace_pass);
        self.hot_queues(pass, me)
    }

    /// The client was told `connection.blocked` and reading is not held (a read is under
    /// way that the blocked client may never complete).
    pub(super) fn blocked_while_reading(&self) -> bool {
        self.blocked_sent && !self.held
    }

    /// Tells a client that asked for it when a resource alarm (memory or disk, `alarm` is
    /// its reason) was raised or cleared since last told.
    pub(super) fn tell_alarm(&mut self, alarm: Option<&'static str>) {
        if alarm.is_some() == self.blocked_sent || !self.tells_blocked {
            return;
        }
        self.blocked_sent = alarm.is_some();
        let m = if let Some(reason) = alarm {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: reason.into(),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        self.shared.method(0, &AMQPClass::Connection(m));
    }

    /// The queues this connection published to that were hot: forgets those that cooled
    /// down, registers the connection with the others to be woken, and holds it while
    /// one is over its credit, or paced (unless the pace floor lets this read `pass`).
    fn hot_queues(
        &mut self,
        pass: bool,
        me: impl FnOnce() -> Recipient<ResumeRead>,
    ) -> Option<Hold> {
        let mut hot = self.shared.hot.borrow_mut();
        hot.retain(|q| q.still_hot());
        if hot.is_empty() {
            return None;
        }
        let me = me();
        let (mut over_credit, mut paced) = (false, false);
        for q in hot.iter() {
            if q.wait_for_room(self.shared.id, me.clone()) {
                if q.over_credit() || q.crowded.load(std::sync::atomic::Ordering::SeqCst) {
                    over_credit = true;
                } else {
                    paced = true;
                }
            }
        }
        if over_credit {
            return Some(Hold::QueueCredit);
        }
        if paced && !pass {
            return Some(Hold::Paced);
        }
        if !paced {
            hot.clear();
        }
        None
    }

    /// Holds reading for `hold` and arms its re-check timer (replacing any earlier one).
    pub(super) fn hold(&mut self, hold: Hold, ctx: &mut Context<Connection>) {
        self.held = true;
        self.last_held = Some(std::time::Instant::now());
        if let Some(h) = self.recheck.take() {
            ctx.cancel_future(h);
        }
        let paced = hold == Hold::Paced;
        self.recheck = Some(ctx.run_later(hold.recheck_after(), move |c, ctx| {
            c.gate.recheck = None;
            // a connection held only by pacing reads again after the floor, whatever
            // the queue's state
            c.gate.pace_pass = paced;
            c.resume(ctx);
        }));
    }

    /// The connection is blocked by an alarm though nothing is waiting to be read: the
    /// heartbeat monitor counts that time as held too.
    pub(super) fn note_blocked(&mut self) {
        self.last_held = Some(std::time::Instant::now());
    }

    /// Since when the client is answerable for silence: its last read, or the last moment
    /// the broker held reading, whichever is later (still held: now).
    pub(super) fn silent_since(&self, last_read: std::time::Instant) -> std::time::Instant {
        if self.held {
            return std::time::Instant::now();
        }
        self.last_held.map_or(last_read, |h| h.max(last_read))
    }

    /// Releases a hold (something woke the connection); false if reading was not held.
    /// The connection then asks [`ReadGate::check`] again before it reads.
    pub(super) fn release(&mut self, ctx: &mut Context<Connection>) -> bool {
        if !self.held {
            return false;
        }
        self.held = false;
        self.shared.read_paused.set(false);
        if let Some(h) = self.recheck.take() {
            ctx.cancel_future(h);
        }
        true
    }

    /// Whether a finished write should wake the connection: it is held and the write
    /// buffer is back under [`OUT_HIGH`].
    pub(super) fn wakes_on_write(&self) -> bool {
        self.held && self.shared.out_len() <= OUT_HIGH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::shared::MAX_PENDING_COMMANDS;

    fn gate(tells_blocked: bool) -> ReadGate {
        let mut g = ReadGate::new(Rc::new(ConnShared::new(1, 4096)));
        g.client_understands_blocked(tells_blocked);
        g
    }

    fn no_waker() -> Recipient<ResumeRead> {
        unreachable!("no hot queue, no waker needed")
    }

    /// What `Node::alarm` says while the memory alarm is on, or off.
    fn alarm(on: bool) -> Option<&'static str> {
        on.then_some("low on memory")
    }

    /// The frames queued in the write buffer, as (class id, method id).
    fn sent(g: &ReadGate) -> Vec<(u16, u16)> {
        let mut out = g.shared.out.borrow_mut().split();
        let d = broker_wire::FrameDecoder::new(4096);
        let mut v = Vec::new();
        while let Ok(Some(broker_wire::Frame::Method { method, .. })) = d.decode(&mut out) {
            v.push((method.get_amqp_class_id(), method.get_amqp_method_id()));
        }
        v
    }

    #[test]
    fn channels_behind_hold_and_raise_the_flag_they_answer() {
        let g = &mut gate(false);
        let mem = false;
        g.shared.pending_commands.set(MAX_PENDING_COMMANDS);
        assert_eq!(g.check(true, alarm(mem), no_waker), None);
        assert!(!g.shared.read_paused.get());
        g.shared.pending_commands.set(MAX_PENDING_COMMANDS + 1);
        assert_eq!(g.check(true, alarm(mem), no_waker), Some(Hold::Channels));
        assert!(g.shared.read_paused.get());
    }

    #[test]
    fn a_full_write_buffer_holds() {
        let g = &mut gate(false);
        let mem = false;
        g.shared.out.borrow_mut().resize(OUT_HIGH + 1, 0);
        assert_eq!(g.check(false, alarm(mem), no_waker), Some(Hold::Writes));
        assert!(!g.shared.read_paused.get());
    }

    #[test]
    fn the_memory_alarm_holds_publishers_and_tells_them_once_per_change() {
        let g = &mut gate(true);
        let mut mem = true;
        // a connection that has not published is not held
        assert_eq!(g.check(false, alarm(mem), no_waker), None);
        assert!(sent(g).is_empty());
        assert_eq!(g.check(true, alarm(mem), no_waker), Some(Hold::Memory));
        assert_eq!(g.check(true, alarm(mem), no_waker), Some(Hold::Memory));
        assert_eq!(sent(g), vec![(10, 60)], "connection.blocked once");
        mem = false;
        assert_eq!(g.check(true, alarm(mem), no_waker), None);
        assert_eq!(g.check(true, alarm(mem), no_waker), None);
        assert_eq!(sent(g), vec![(10, 61)], "connection.unblocked once");
    }

    #[test]
    fn clients_without_the_capability_are_held_but_not_told() {
        let g = &mut gate(false);
        let mem = true;
        assert_eq!(g.check(true, alarm(mem), no_waker), Some(Hold::Memory));
        assert!(sent(g).is_empty());
    }

    #[test]
    fn pacing_rechecks_at_the_floor_everything_else_at_the_fallback() {
        assert_eq!(Hold::Paced.recheck_after(), PACE_FLOOR);
        for h in [
            Hold::Channels,
            Hold::Writes,
            Hold::Memory,
            Hold::QueueCredit,
        ] {
            assert_eq!(h.recheck_after(), PAUSE_RECHECK);
        }
    }
}
