//! One supervision mechanism for every actor: connections, channels, queues and
//! exchanges all start through [`start`] or [`start_in_arbiter`].
//!
//! Why not actix's `Supervisor`: it restarts an actor only after `ctx.stop()`. A panic in
//! a handler, a timer or a `ctx.wait` continuation unwinds out of the actor's future, the
//! runtime drops it, and the actor vanishes silently: its mailbox keeps filling, its
//! client hangs, its counters leak. Here the actor's future is polled inside
//! `catch_unwind`; a panic anywhere in it (all of those run inside that poll) is caught,
//! logged and counted, the actor's pending futures and timers are dropped
//! (`ContextFut::restart`), and the actor's [`Supervised::restarting`] decides what
//! happens next, with the actor's state and mailbox intact:
//!
//! - a **queue** restarts: consumers get basic.cancel, a durable queue reloads its stored
//!   messages;
//! - an **exchange** restarts from its last committed bindings;
//! - a **channel** ends with channel.close 541, its unacked messages requeued and its
//!   consumers removed;
//! - a **connection** ends with connection.close 541, its channels and exclusive queues
//!   with it, every count it held released.
//!
//! The actor keeps its address (`Addr`) through a restart, so nothing that holds it needs
//! to know. Other actors on the same worker thread are untouched: each actor is its own
//! task. An actor that panics again and again is ended after [`MAX_PANICS`] so a panic
//! in `started` cannot spin a worker.

use actix::dev::channel::channel;
use actix::dev::ContextFut;
use actix::prelude::*;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{self, Poll};

/// actix's default mailbox capacity (`actix::dev::DEFAULT_CAPACITY` is private): what
/// `Addr::send` waits on before it queues; `do_send` ignores it.
const MAILBOX_CAPACITY: usize = 16;

/// How many panics one actor survives before it is ended for good.
pub const MAX_PANICS: u32 = 16;

/// Panics caught per actor kind, for `/metrics` (`broker_actor_panics_total`).
pub static PANICS: [AtomicU64; 4] = [
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
    AtomicU64::new(0),
];

/// The kinds of supervised actors (the index into [`PANICS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An AMQP connection.
    Connection = 0,
    /// An AMQP channel.
    Channel = 1,
    /// A queue.
    Queue = 2,
    /// An exchange.
    Exchange = 3,
}

impl Kind {
    /// Every kind, in [`PANICS`] order.
    pub const ALL: [Kind; 4] = [Kind::Connection, Kind::Channel, Kind::Queue, Kind::Exchange];

    /// The kind's name, as in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Channel => "channel",
            Kind::Queue => "queue",
            Kind::Exchange => "exchange",
        }
    }
}

/// An actor started under supervision. Its [`Supervised::restarting`] is called after a
/// panic (not after a normal stop) and must leave the actor either consistent again or
/// on its way to a clean end (`ctx.stop()` after telling its client).
pub trait Supervisable: Supervised + Actor<Context = Context<Self>> {
    /// What the actor is, for logs and metrics.
    const KIND: Kind;
}

/// Starts `A` on the current worker thread under supervision.
pub fn start<A: Supervisable>(f: impl FnOnce(&mut Context<A>) -> A) -> Addr<A> {
    let mut ctx = Context::new();
    let act = f(&mut ctx);
    let addr = ctx.address();
    actix_rt::spawn(Guarded {
        fut: ctx.into_future(act),
        panics: 0,
    });
    addr
}

/// Starts `A` on `arbiter`'s thread under supervision; the address is usable at once.
pub fn start_in_arbiter<A: Supervisable>(
    arbiter: &ArbiterHandle,
    f: impl FnOnce(&mut Context<A>) -> A + Send + 'static,
) -> Addr<A> {
    let (tx, rx) = channel(MAILBOX_CAPACITY);
    arbiter.spawn_fn(move || {
        let mut ctx = Context::with_receiver(rx);
        let act = f(&mut ctx);
        actix_rt::spawn(Guarded {
            fut: ctx.into_future(act),
            panics: 0,
        });
    });
    Addr::new(tx)
}

/// The actor's future, polled inside `catch_unwind`.
struct Guarded<A: Supervisable> {
    /// The actor, its context and mailbox.
    fut: ContextFut<A, Context<A>>,
    /// Panics caught so far.
    panics: u32,
}

impl<A: Supervisable> Future for Guarded<A> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx)));
            match polled {
                Ok(p) => return p,
                Err(payload) => {
                    this.panics += 1;
                    PANICS[A::KIND as usize].fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        actor = A::KIND.as_str(),
                        panic = %panic_text(payload.as_ref()),
                        count = this.panics,
                        "actor panicked; supervisor takes over"
                    );
                    if this.panics > MAX_PANICS {
                        tracing::error!(actor = A::KIND.as_str(), "actor keeps panicking: ended");
                        return Poll::Ready(());
                    }
                    // drops its futures and timers, calls `restarting` with the state and
                    // mailbox intact; false when nobody holds its address any more
                    let restarted =
                        catch_unwind(AssertUnwindSafe(|| this.fut.restart())).unwrap_or(false);
                    if !restarted {
                        return Poll::Ready(());
                    }
                }
            }
        }
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}
