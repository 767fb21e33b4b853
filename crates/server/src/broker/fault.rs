//! Fault injection (cargo feature `fault-injection`, off by default and refused in
//! release builds): tests make an actor panic on demand in a handler, a timer or a
//! continuation, through `POST /api/fault-injection`, and assert what its clients see.

use actix::prelude::*;
use std::time::Duration;

/// Where the injected panic happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// In the handler of the [`Fault`] message itself.
    Handler,
    /// In a timer the handler sets (`run_later`).
    Timer,
    /// In the continuation of a future the actor waits on (`ctx.wait`).
    Continuation,
}

impl At {
    /// Parses "handler", "timer" or "continuation".
    pub fn parse(s: &str) -> Option<At> {
        match s {
            "handler" => Some(At::Handler),
            "timer" => Some(At::Timer),
            "continuation" => Some(At::Continuation),
            _ => None,
        }
    }
}

/// Makes the receiving actor panic at `At` (a connection passes it on to its channel
/// `channel` when one is named).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Fault {
    /// Where to panic.
    pub at: At,
    /// For a connection: the channel to pass the fault to (`None`: the connection).
    pub channel: Option<u16>,
}

/// Panics in the calling handler, or arranges a panic in a timer or a continuation.
pub fn inject<A: Actor<Context = Context<A>>>(at: At, ctx: &mut Context<A>) {
    match at {
        At::Handler => panic!("fault injected in a handler"),
        At::Timer => {
            ctx.run_later(Duration::from_millis(1), |_, _| {
                panic!("fault injected in a timer")
            });
        }
        At::Continuation => {
            let fut = async {
                tokio::time::sleep(Duration::from_millis(1)).await;
            };
            ctx.wait(
                actix::fut::wrap_future::<_, A>(fut)
                    .map(|(), _, _| panic!("fault injected in a continuation")),
            );
        }
    }
}
