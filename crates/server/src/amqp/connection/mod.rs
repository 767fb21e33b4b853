//! The connection actor: one per client connection. It reads its transport, splits and
//! checks frames, runs the connection handshake and channel-0 methods itself, assembles
//! content per channel and hands complete commands to channel actors. It owns the write
//! half and flushes the shared write buffer in batches. Whether it reads at all is its
//! read gate's to say (`gate.rs`); what it reads through is a [`Transport`] the listener
//! hands it, TCP or anything else that is `AsyncRead`/`AsyncWrite`.

use crate::amqp::channel::{ChannelActor, ClientClose, Incoming, Shutdown};
use crate::amqp::handshake::{self, ClientInfo};
use crate::amqp::shared::ConnShared;
pub use crate::broker::messages::{ForceClose, ResumeRead};
use crate::broker::runtime::Runtime;
use crate::broker::supervise::{Kind, Supervisable};
use crate::broker::user_limits::UserUsage;
use crate::broker::vhost::VHost;
use actix::prelude::*;
use broker_core::{AmqpError, ReplyCode};
use broker_wire::assembly::{Assembler, AssemblyError, Command};
use broker_wire::frame::{Frame, FRAME_MIN_SIZE, PROTOCOL_HEADER, PROTOCOL_HEADER_0_9};
use broker_wire::protocol::{channel, connection, AMQPClass};
use broker_wire::{encode, FrameDecoder};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn, Span};

mod frames;
mod gate;
mod io;
#[cfg(test)]
mod tests;
mod transport;

use gate::ReadGate;
pub use transport::{Accepted, Transport};
use transport::{Opening, Reader, Writer};

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the 8-byte protocol header.
    AwaitHeader,
    /// connection.start sent.
    AwaitStartOk,
    /// connection.tune sent.
    AwaitTuneOk,
    /// Waiting for connection.open.
    AwaitOpen,
    /// Open for channels.
    Open,
    /// We sent connection.close and wait for close-ok.
    Closing,
    /// The client closed the connection and got close-ok. As RabbitMQ (and the spec's
    /// close-ok rule) the client closes the socket: we read on, answer a repeated close
    /// with close-ok, ignore everything else, and end the socket only after
    /// [`closed_linger`] if the client never does.
    ClosedByPeer,
    /// A login failed without a word to the client: nothing is read or written, the socket
    /// closes after [`handshake::SILENT_CLOSE_DELAY`].
    Silenced,
    /// Done; the socket closes once the write buffer is flushed.
    Closed,
}

struct Slot {
    addr: Addr<ChannelActor>,
    assembler: Assembler,
    /// The server closed the channel and waits for close-ok; other frames are dropped.
    closing: bool,
    /// Commands assembled from the current read, sent as one mailbox message when the
    /// read is processed (or before anything else is sent to the channel).
    batch: Vec<Command>,
}

impl Slot {
    /// Hands the batched commands to the channel.
    fn send_batch(&mut self) {
        if !self.batch.is_empty() {
            self.addr
                .do_send(Incoming::Batch(std::mem::take(&mut self.batch)));
        }
    }
}

/// The connection actor.
pub struct Connection {
    id: u64,
    peer: SocketAddr,
    /// The client came through the TLS listener.
    tls: bool,
    /// The common name of its verified client certificate (SASL EXTERNAL's user).
    client_cn: Option<String>,
    /// The listener address it connected to, once the transport is open.
    local: Option<SocketAddr>,
    rt: Arc<Runtime>,
    span: Span,
    /// The transport's read half; `None` until it is open and while a read is under way.
    reader: Option<Reader>,
    /// The transport's write half; `None` until it is open and while a write is under way.
    writer: Option<Writer>,
    rbuf: BytesMut,
    writing: bool,
    decoder: FrameDecoder,
    state: State,
    shared: Rc<ConnShared>,
    channels: HashMap<u16, Slot>,
    channel_max: u16,
    heartbeat: u16,
    last_read: Instant,
    last_write: Instant,
    vhost: Option<Arc<VHost>>,
    client: ClientInfo,
    torn_down: bool,
    /// Every reason to stop reading; asked before each read.
    gate: ReadGate,
    /// Channels with batched commands not yet sent.
    batched: Vec<u16>,
    /// Held while [`State::Silenced`]: counts this connection among the delayed closes.
    silenced: Option<handshake::SilenceSlot>,
    /// The user's live counts, once connection.open counted this connection in them.
    user_usage: Option<Arc<UserUsage>>,
    /// How many of this connection's channels are counted in `user_usage`.
    counted_channels: usize,
}

impl Connection {
    /// connection.open: the vhost must exist, the user must have permissions in it, and
    /// its max-connections limit must allow one more (530 NOT_ALLOWED otherwise, with
    /// RabbitMQ's texts), and so must the user's.
    fn open_vhost(&mut self, name: &str) -> Result<Arc<VHost>, AmqpError> {
        let user = self.shared.user.borrow().clone();
        let limits = &self.rt.registry.user_limits;
        limits.open_node_connection(self.rt.config.max_connections)?;
        let usage = limits.usage(&user);
        match self.vhost_limits(name, &user, &usage) {
            Ok(v) => {
                self.user_usage = Some(usage);
                Ok(v)
            }
            Err(e) => {
                limits.close_node_connection();
                Err(e)
            }
        }
    }

    /// The vhost's checks of [`Connection::open_vhost`], then the user's connection limit.
    fn vhost_limits(
        &self,
        name: &str,
        user: &str,
        usage: &UserUsage,
    ) -> Result<Arc<VHost>, AmqpError> {
        let Some(v) = self.rt.vhost(name) else {
            return Err(AmqpError::not_allowed(format!("vhost {name} not found")));
        };
        if self.rt.registry.permission(name, user).is_none() {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{name}' refused for user '{user}'"
            )));
        }
        let limit = self
            .rt
            .registry
            .vhost(name)
            .and_then(|r| r.limits.max_connections);
        let n = v
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if limit.is_some_and(|l| n as u64 >= l) {
            v.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{name}' refused for user '{user}': connection limit ({}) is reached",
                limit.unwrap_or(0)
            )));
        }
        if let Err(e) = self.rt.registry.user_limits.open_connection(user, usage) {
            v.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
        Ok(v)
    }

    /// Starts a connection actor for an accepted client on the next worker thread, which
    /// opens its transport and serves it.
    pub fn spawn(accepted: Accepted, rt: Arc<Runtime>) {
        let arbiter = rt.next_arbiter();
        let id = rt.next_connection_id();
        crate::broker::supervise::start_in_arbiter(&arbiter, move |ctx| {
            let frame_max = rt.config.frame_max;
            let (peer, tls) = (accepted.peer, accepted.tls);
            Connection::open_transport(accepted.open(), ctx);
            let shared = Rc::new(ConnShared::new(id, frame_max));
            Connection {
                id,
                peer,
                tls,
                client_cn: None,
                local: None,
                span: tracing::info_span!("conn", id, %peer),
                reader: None,
                writer: None,
                rbuf: BytesMut::with_capacity(64 << 10),
                writing: false,
                // RabbitMQ's limit until tune-ok: frames of at most FRAME_MIN_SIZE
                decoder: FrameDecoder::new(FRAME_MIN_SIZE),
                state: State::AwaitHeader,
                gate: ReadGate::new(shared.clone()),
                shared,
                channels: HashMap::new(),
                channel_max: rt.config.channel_max,
                heartbeat: 0,
                last_read: Instant::now(),
                last_write: Instant::now(),
                vhost: None,
                client: ClientInfo::default(),
                torn_down: false,
                batched: Vec::new(),
                silenced: None,
                user_usage: None,
                counted_channels: 0,
                rt,
            }
        });
    }

    fn send(&self, channel: u16, m: AMQPClass) {
        self.shared.method(channel, &m);
    }
}

impl Connection {
    fn start_heartbeats(&mut self, ctx: &mut Context<Self>) {
        if self.heartbeat == 0 {
            return;
        }
        let hb = Duration::from_secs(self.heartbeat as u64);
        let tick = (hb / 2).max(Duration::from_millis(500));
        ctx.run_interval(tick, move |a, ctx| {
            // time the broker held reading (alarm, backpressure) is not the client's, nor
            // is time a publisher spends blocked by an alarm with nothing left to read
            // (RabbitMQ pauses its monitor while a connection is blocked)
            if a.state == State::Open && a.shared.published.get() && a.rt.alarm().is_some() {
                a.gate.note_blocked();
            }
            if a.gate.silent_since(a.last_read).elapsed() > hb * 2 {
                let _e = a.span.enter();
                warn!("missed heartbeats from client, closing connection");
                ctx.stop();
                return;
            }
            if a.last_write.elapsed() >= tick && !a.writing && a.shared.out_len() == 0 {
                encode::heartbeat(&mut a.shared.out.borrow_mut());
                a.flush(ctx);
            }
        });
    }

    /// Closes the connection with an error: connection.close now, close-ok awaited.
    pub fn fail(&mut self, e: AmqpError, ctx: &mut Context<Self>) {
        if matches!(
            self.state,
            State::Closing | State::Closed | State::ClosedByPeer | State::Silenced
        ) {
            return;
        }
        {
            let _e = self.span.enter();
            warn!(code = e.code.code(), text = %e.reply_text(), "closing connection");
        }
        if self.state == State::AwaitHeader {
            self.state = State::Closed;
            return;
        }
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: e.code.code(),
                reply_text: e.reply_text().into(),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
        self.teardown_channels();
        self.state = State::Closing;
        self.flush(ctx);
        ctx.run_later(Duration::from_secs(3), |_, ctx| ctx.stop());
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Closed;
        self.flush(ctx);
    }

    fn teardown_channels(&mut self) {
        for (_, mut slot) in self.channels.drain() {
            slot.send_batch();
            slot.addr.do_send(Shutdown);
        }
        self.count_channels();
    }
}

impl Supervisable for Connection {
    const KIND: Kind = Kind::Connection;
}

/// After a panic anywhere in the connection (`broker/supervise.rs`): it ends with
/// connection.close 541 INTERNAL_ERROR, its channels end with it (their unacked messages
/// requeued), and stopping releases its exclusive queues and every count it held. A write
/// or read that was in flight went with the panic: without its socket half the
/// connection cannot tell the client and just closes.
impl Supervised for Connection {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        let in_flight_write = self.writing;
        self.writing = false;
        if in_flight_write || self.writer.is_none() {
            self.teardown_channels();
            ctx.stop();
            return;
        }
        match self.state {
            State::Closing
            | State::Closed
            | State::ClosedByPeer
            | State::Silenced
            | State::AwaitHeader => {
                ctx.stop();
            }
            _ => self.fail(AmqpError::internal("internal error"), ctx),
        }
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<crate::broker::fault::Fault> for Connection {
    type Result = ();
    fn handle(&mut self, f: crate::broker::fault::Fault, ctx: &mut Context<Self>) {
        match f.channel {
            Some(ch) => {
                if let Some(slot) = self.channels.get(&ch) {
                    slot.addr
                        .do_send(crate::broker::fault::Fault { channel: None, ..f });
                }
            }
            None => crate::broker::fault::inject(f.at, ctx),
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let timeout = Duration::from_millis(self.rt.config.handshake_timeout_ms);
        ctx.run_later(timeout, |a, ctx| {
            if matches!(
                a.state,
                State::AwaitHeader | State::AwaitStartOk | State::AwaitTuneOk | State::AwaitOpen
            ) {
                let _e = a.span.enter();
                warn!("handshake timeout, closing socket");
                ctx.stop();
            }
        });
        self.schedule_read(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.teardown_channels();
        self.unregister();
    }
}

/// How long a connection the client closed keeps its socket for the client to close it:
/// RabbitMQ's `?CLOSING_TIMEOUT` (30 s), or the heartbeat interval if that is shorter.
fn closed_linger(heartbeat: u16) -> Duration {
    let secs = if heartbeat > 0 && heartbeat < 30 {
        heartbeat
    } else {
        30
    };
    Duration::from_secs(u64::from(secs))
}

impl Connection {
    /// Leaves the registries, the vhost's connection count and its exclusive queues, once:
    /// at client close (RabbitMQ deletes exclusive queues before close-ok) or at stop.
    fn unregister(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.rt.connections.remove(&self.id);
        #[cfg(feature = "fault-injection")]
        self.rt.fault_targets.remove(&self.id);
        self.rt.conn_info.remove(&self.id);
        if let Some(u) = self.user_usage.take() {
            self.rt.registry.user_limits.close_node_connection();
            u.connections
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            u.channels.fetch_sub(
                self.counted_channels as u64,
                std::sync::atomic::Ordering::AcqRel,
            );
            self.counted_channels = 0;
        }
        if let Some(v) = self.vhost.clone() {
            v.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let id = self.id;
            actix::spawn(async move { v.connection_closed(id).await });
        }
        let _e = self.span.enter();
        let user = self.shared.user.borrow().clone();
        info!(peer = %self.peer, %user, "connection closed");
    }
}

/// A channel carried out this connection's first publish. The gate decided the read
/// that brought it in without knowing (channels run after the read), so a raised alarm
/// is told now: connection.blocked goes out, and the next read is held.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FirstPublish;

impl Handler<FirstPublish> for Connection {
    type Result = ();
    fn handle(&mut self, _: FirstPublish, ctx: &mut Context<Self>) {
        if self.state != State::Open {
            return;
        }
        if let Some(reason) = self.rt.alarm() {
            self.gate.tell_alarm(Some(reason));
            self.flush(ctx);
            self.watch_alarm(ctx);
        }
    }
}

impl Connection {
    /// A client told `connection.blocked` while a read was already under way stops
    /// sending, so that read may never finish and the gate (asked before each read) never
    /// looks at the alarm again: until reading is held (the hold's timer then takes
    /// over), this timer tells the client when the alarm clears.
    fn watch_alarm(&mut self, ctx: &mut Context<Self>) {
        ctx.run_later(gate::PAUSE_RECHECK, |a, ctx| {
            if !a.gate.blocked_while_reading() || a.state != State::Open {
                return;
            }
            let alarm = a.rt.alarm();
            a.gate.tell_alarm(alarm);
            a.flush(ctx);
            if alarm.is_some() {
                a.watch_alarm(ctx);
            }
        });
    }
}

/// Asks the connection to flush its write buffer (sent by channels).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Flush;

impl Handler<Flush> for Connection {
    type Result = ();
    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl Handler<ResumeRead> for Connection {
    type Result = ();
    fn handle(&mut self, _: ResumeRead, ctx: &mut Context<Self>) {
        self.resume(ctx);
    }
}

/// A channel hit a connection-level error.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionFail(pub AmqpError);

impl Handler<ConnectionFail> for Connection {
    type Result = ();
    fn handle(&mut self, m: ConnectionFail, ctx: &mut Context<Self>) {
        self.fail(m.0, ctx);
    }
}

/// A channel closed itself with a channel error and awaits close-ok.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ChannelClosing(pub u16);

impl Handler<ChannelClosing> for Connection {
    type Result = ();
    fn handle(&mut self, m: ChannelClosing, _: &mut Context<Self>) {
        if let Some(s) = self.channels.get_mut(&m.0) {
            s.closing = true;
            s.assembler.reset();
        }
    }
}

impl Handler<ForceClose> for Connection {
    type Result = ();
    fn handle(&mut self, m: ForceClose, ctx: &mut Context<Self>) {
        self.fail(AmqpError::new(ReplyCode::ConnectionForced, m.reason), ctx);
    }
}
