//! The connection actor: one per TCP connection. It reads the socket, splits and checks
//! frames, runs the connection handshake and channel-0 methods itself, assembles content
//! per channel and hands complete commands to channel actors. It owns the write half and
//! flushes the shared write buffer in batches. It stops reading when its channels are
//! behind, its client does not read, or the broker is over its memory watermark.

use crate::channel::{ChannelActor, ClientClose, Incoming, Shutdown};
use crate::handshake::{self, ClientInfo};
use crate::runtime::Runtime;
use crate::shared::{ConnShared, MAX_PENDING_COMMANDS, OUT_HIGH};
use crate::vhost::VHost;
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
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tracing::{info, warn, Span};

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
    rt: Arc<Runtime>,
    span: Span,
    reader: Option<OwnedReadHalf>,
    writer: Option<OwnedWriteHalf>,
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
    blocked_sent: bool,
    torn_down: bool,
    /// Reading is paused for backpressure; a [`ResumeRead`] (or the fallback timer)
    /// resumes it.
    paused: bool,
    /// The fallback timer of a pause.
    retry: Option<SpawnHandle>,
    /// The next throttle check lets pacing pass once (the pace floor's timer fired).
    force_read: bool,
    /// Channels with batched commands not yet sent.
    batched: Vec<u16>,
    /// Held while [`State::Silenced`]: counts this connection among the delayed closes.
    silenced: Option<handshake::SilenceSlot>,
}

/// What [`Connection::throttled`] decided about reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Read on.
    Read,
    /// Pause until woken (or the re-check timer).
    Wait,
    /// Pause for pacing only: read once more after [`PACE_FLOOR`] at the latest.
    Paced,
}

/// The longest a connection held only by a paced queue waits before it reads once more.
const PACE_FLOOR: Duration = Duration::from_millis(2);

/// How long a paused connection waits before it checks again on its own. Channels, hot
/// queues and finished writes wake it sooner; the timer covers the memory alarm.
const PAUSE_RECHECK: Duration = Duration::from_millis(10);

impl Connection {
    /// connection.open: the vhost must exist, the user must have permissions in it, and
    /// its max-connections limit must allow one more (530 NOT_ALLOWED otherwise, with
    /// RabbitMQ's texts).
    fn open_vhost(&self, name: &str) -> Result<Arc<VHost>, AmqpError> {
        let user = self.shared.user.borrow().clone();
        let Some(v) = self.rt.vhost(name) else {
            return Err(AmqpError::not_allowed(format!("vhost {name} not found")));
        };
        if self.rt.registry.permission(name, &user).is_none() {
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
        Ok(v)
    }

    /// Starts a connection actor for an accepted socket on a worker thread.
    pub fn spawn(stream: std::net::TcpStream, peer: SocketAddr, rt: Arc<Runtime>) {
        let arbiter = rt.next_arbiter();
        let id = rt.next_connection_id();
        Connection::start_in_arbiter(&arbiter, move |_ctx| {
            let frame_max = rt.config.frame_max;
            let (reader, writer) = match TcpStream::from_std(stream) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let (r, w) = s.into_split();
                    (Some(r), Some(w))
                }
                Err(e) => {
                    warn!(%peer, "cannot register socket: {e}");
                    (None, None)
                }
            };
            Connection {
                id,
                peer,
                span: tracing::info_span!("conn", id, %peer),
                reader,
                writer,
                rbuf: BytesMut::with_capacity(64 << 10),
                writing: false,
                // RabbitMQ's limit until tune-ok: frames of at most FRAME_MIN_SIZE
                decoder: FrameDecoder::new(FRAME_MIN_SIZE),
                state: State::AwaitHeader,
                shared: Rc::new(ConnShared::new(id, frame_max)),
                channels: HashMap::new(),
                channel_max: rt.config.channel_max,
                heartbeat: 0,
                last_read: Instant::now(),
                last_write: Instant::now(),
                vhost: None,
                client: ClientInfo::default(),
                blocked_sent: false,
                torn_down: false,
                paused: false,
                retry: None,
                force_read: false,
                batched: Vec::new(),
                silenced: None,
                rt,
            }
        });
    }

    fn send(&self, channel: u16, m: AMQPClass) {
        self.shared.method(channel, &m);
    }

    /// Whether reading must pause (backpressure), and how. Hot queues get this connection as a
    /// waiter, to wake it when they have taken their inbox in.
    fn throttled(&mut self, ctx: &mut Context<Self>) -> Hold {
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

    fn schedule_read(&mut self, ctx: &mut Context<Self>) {
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
    fn pause(&mut self, paced: bool, ctx: &mut Context<Self>) {
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
    fn resume(&mut self, ctx: &mut Context<Self>) {
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

    /// Processes what was read, then hands each channel its commands in one message.
    fn process_input(&mut self, ctx: &mut Context<Self>) {
        self.process_frames(ctx);
        self.send_batches();
    }

    /// Sends every channel the commands batched for it.
    fn send_batches(&mut self) {
        for ch in std::mem::take(&mut self.batched) {
            if let Some(slot) = self.channels.get_mut(&ch) {
                slot.send_batch();
            }
        }
    }

    fn process_frames(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::AwaitHeader {
            if self.rbuf.len() < 8 {
                let seen = &self.rbuf[..];
                if !PROTOCOL_HEADER.starts_with(seen) && !PROTOCOL_HEADER_0_9.starts_with(seen) {
                    self.refuse_protocol(ctx);
                }
                return;
            }
            // RabbitMQ treats the 0-9 header as 0-9-1, and so do we
            let header = &self.rbuf[..8];
            if header != PROTOCOL_HEADER && header != PROTOCOL_HEADER_0_9 {
                self.refuse_protocol(ctx);
                return;
            }
            self.rbuf.advance(8);
            self.send(0, handshake::start());
            self.state = State::AwaitStartOk;
        }
        loop {
            if matches!(self.state, State::Closed | State::Silenced) {
                self.rbuf.clear();
                return;
            }
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(frame)) => self.handle_frame(frame, ctx),
                Ok(None) => return,
                Err(e) => {
                    let (c, m) = e.class_method();
                    self.fail(
                        AmqpError::new(ReplyCode::from_code(e.reply_code()), e.to_string())
                            .on(c, m),
                        ctx,
                    );
                    self.rbuf.clear();
                    return;
                }
            }
        }
    }

    /// A wrong protocol header gets the one we speak, then the socket closes.
    fn refuse_protocol(&mut self, ctx: &mut Context<Self>) {
        self.shared
            .out
            .borrow_mut()
            .extend_from_slice(PROTOCOL_HEADER);
        self.state = State::Closed;
        self.flush(ctx);
    }

    fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        if self.state == State::ClosedByPeer {
            // RabbitMQ answers every further close with close-ok and ignores the rest
            if let Frame::Method { channel: 0, method } = frame {
                if let AMQPClass::Connection(connection::AMQPMethod::Close(_)) = *method {
                    self.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    );
                }
            }
            return;
        }
        if self.state == State::Closing {
            // after our connection.close only close-ok (or a crossing close) matters
            if let Frame::Method { channel: 0, method } = frame {
                match *method {
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => self.finish(ctx),
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                        self.send(
                            0,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                connection::CloseOk {},
                            )),
                        );
                        self.finish(ctx);
                    }
                    _ => {}
                }
            }
            return;
        }
        match frame {
            Frame::Heartbeat => {}
            Frame::Method { channel: 0, method } => self.connection_method(*method, ctx),
            f if f.channel() == 0 => self.fail(
                AmqpError::unexpected_frame("content frame on channel 0"),
                ctx,
            ),
            f => {
                if self.state != State::Open {
                    self.fail(
                        AmqpError::unexpected_frame(format!(
                            "frame on channel {} before connection.open",
                            f.channel()
                        )),
                        ctx,
                    );
                    return;
                }
                self.channel_frame(f, ctx);
            }
        }
    }

    fn connection_method(&mut self, m: AMQPClass, ctx: &mut Context<Self>) {
        let (cid, mid) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let AMQPClass::Connection(m) = m else {
            self.fail(self.unexpected_method().on(cid, mid), ctx);
            return;
        };
        use connection::AMQPMethod as M;
        match (self.state, m) {
            (State::AwaitStartOk, M::StartOk(s)) => {
                match handshake::authenticate(&s, &self.rt.registry, self.peer.ip()) {
                    Ok((user, client)) => {
                        self.client = client;
                        let _e = self.span.enter();
                        info!(%user, "authenticated");
                        *self.shared.user.borrow_mut() = user;
                        self.send(0, handshake::tune(&self.rt.config));
                        self.state = State::AwaitTuneOk;
                    }
                    Err(e) => self.login_failed(e, ctx),
                }
            }
            (State::AwaitTuneOk, M::TuneOk(t)) => match handshake::negotiate(&t, &self.rt.config) {
                Ok((channel_max, frame_max, heartbeat)) => {
                    self.channel_max = channel_max;
                    self.decoder.frame_max = frame_max;
                    self.shared.frame_max.set(frame_max);
                    self.heartbeat = heartbeat;
                    self.start_heartbeats(ctx);
                    self.state = State::AwaitOpen;
                }
                Err(e) => self.fail(e.on(cid, mid), ctx),
            },
            (State::AwaitOpen, M::Open(o)) => match self.open_vhost(o.virtual_host.as_str()) {
                Ok(v) => {
                    self.vhost = Some(v);
                    self.state = State::Open;
                    self.rt
                        .connections
                        .insert(self.id, ctx.address().recipient());
                    self.send(0, AMQPClass::Connection(M::OpenOk(connection::OpenOk {})));
                    let user = self.shared.user.borrow().clone();
                    let local = self.rt.amqp_addr.get().copied();
                    self.rt.conn_info.insert(
                        self.id,
                        Arc::new(crate::runtime::ConnInfo {
                            id: self.id,
                            name: match local {
                                Some(l) => format!("{} -> {l}", self.peer),
                                None => self.peer.to_string(),
                            },
                            peer: self.peer,
                            user: user.clone(),
                            vhost: o.virtual_host.to_string(),
                            client: self.client.properties.clone(),
                            connected_at: crate::runtime::now_ms(),
                            channels: Default::default(),
                            frame_max: self.decoder.frame_max,
                            heartbeat: self.heartbeat,
                        }),
                    );
                    let _e = self.span.enter();
                    info!(vhost = o.virtual_host.as_str(), %user, client = %self.client.product, "connection open");
                }
                Err(e) => self.fail(e.on(cid, mid), ctx),
            },
            (_, M::Close(c)) => {
                self.span.in_scope(|| {
                    info!(
                        code = c.reply_code,
                        text = c.reply_text.as_str(),
                        "client closed the connection"
                    )
                });
                self.teardown_channels();
                self.unregister();
                self.send(0, AMQPClass::Connection(M::CloseOk(connection::CloseOk {})));
                self.state = State::ClosedByPeer;
                ctx.run_later(closed_linger(self.heartbeat), |_, ctx| ctx.stop());
            }
            (State::Open, M::UpdateSecret(_)) => {
                self.send(
                    0,
                    AMQPClass::Connection(M::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
            }
            (State::Open, M::Blocked(_) | M::Unblocked(_)) => {}
            (_, _) => self.fail(self.unexpected_method().on(cid, mid), ctx),
        }
    }

    /// A method channel 0 does not take in this state: 504 CHANNEL_ERROR with RabbitMQ's
    /// text, which names the state.
    fn unexpected_method(&self) -> AmqpError {
        let state = match self.state {
            State::AwaitHeader | State::AwaitStartOk => "starting",
            State::AwaitTuneOk => "tuning",
            State::AwaitOpen => "opening",
            State::Open => "running",
            _ => "closing",
        };
        AmqpError::channel_error(format!("unexpected method in connection state {state}"))
    }

    /// A failed login ends as in RabbitMQ: a refused one is told with connection.close 403
    /// (class and method 0) to clients that announced `authentication_failure_close`;
    /// everyone else is told nothing and the socket closes after the silent-close delay.
    fn login_failed(&mut self, f: handshake::LoginFailure, ctx: &mut Context<Self>) {
        let text = match f {
            handshake::LoginFailure::Refused { error, tell: true } => {
                self.fail(error, ctx);
                return;
            }
            handshake::LoginFailure::Refused { error, .. } => error.reply_text(),
            handshake::LoginFailure::Invalid(text) => text,
        };
        self.span
            .in_scope(|| warn!(%text, "login failed, closing the socket without a reply"));
        self.state = State::Silenced;
        self.rbuf.clear();
        // a storm of failed logins holds at most MAX_SILENCED sockets: beyond that they
        // are closed at once
        match handshake::SilenceSlot::take() {
            Some(slot) => {
                self.silenced = Some(slot);
                ctx.run_later(handshake::SILENT_CLOSE_DELAY, |a, ctx| {
                    a.silenced = None;
                    ctx.stop();
                });
            }
            None => ctx.stop(),
        }
    }

    fn channel_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let ch = frame.channel();
        if ch > self.channel_max {
            self.fail(
                AmqpError::channel_error(format!(
                    "channel {ch} exceeds channel_max {}",
                    self.channel_max
                )),
                ctx,
            );
            return;
        }
        let is = |f: &Frame, want: fn(&AMQPClass) -> bool| matches!(f, Frame::Method { method, .. } if want(method));
        let open = |m: &AMQPClass| matches!(m, AMQPClass::Channel(channel::AMQPMethod::Open(_)));
        let close = |m: &AMQPClass| matches!(m, AMQPClass::Channel(channel::AMQPMethod::Close(_)));
        let close_ok =
            |m: &AMQPClass| matches!(m, AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)));
        let Some(slot) = self.channels.get_mut(&ch) else {
            if is(&frame, open) {
                self.open_channel(ch, ctx);
            } else {
                let (c, m) = match &frame {
                    Frame::Method { method, .. } => {
                        (method.get_amqp_class_id(), method.get_amqp_method_id())
                    }
                    _ => (0, 0),
                };
                self.fail(
                    AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}"))
                        .on(c, m),
                    ctx,
                );
            }
            return;
        };
        if slot.closing {
            slot.send_batch();
            if is(&frame, close_ok) {
                if let Some(s) = self.channels.remove(&ch) {
                    self.count_channels();
                    s.addr.do_send(Shutdown);
                }
            } else if is(&frame, close) {
                self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                if let Some(s) = self.channels.remove(&ch) {
                    self.count_channels();
                    s.addr.do_send(Shutdown);
                }
            }
            return;
        }
        // during a content sequence every frame goes to the assembler, which refuses
        // methods with 505 UNEXPECTED_FRAME
        if slot.assembler.is_idle() {
            if is(&frame, open) {
                self.fail(
                    AmqpError::channel_error("second 'channel.open' seen").on(20, 10),
                    ctx,
                );
                return;
            }
            if is(&frame, close) {
                if let Some(mut s) = self.channels.remove(&ch) {
                    self.count_channels();
                    s.send_batch();
                    s.addr.do_send(ClientClose);
                }
                return;
            }
            if is(&frame, close_ok) {
                return;
            }
        }
        match slot.assembler.feed(frame) {
            Ok(Some(cmd)) => {
                self.shared
                    .pending_commands
                    .set(self.shared.pending_commands.get() + 1);
                if slot.batch.is_empty() {
                    self.batched.push(ch);
                }
                slot.batch.push(cmd);
            }
            Ok(None) => {}
            Err(AssemblyError::TooLarge { size, max }) => {
                slot.assembler.reset();
                slot.closing = true;
                slot.send_batch();
                slot.addr.do_send(Incoming::Fail(
                    AmqpError::precondition_failed(format!(
                        "message size {size} is larger than configured max size {max}"
                    ))
                    .on(60, 40),
                ));
            }
            Err(AssemblyError::Wire(e)) => {
                let (c, m) = e.class_method();
                self.fail(
                    AmqpError::new(ReplyCode::from_code(e.reply_code()), e.to_string()).on(c, m),
                    ctx,
                );
            }
        }
    }

    /// Publishes the channel count to the management view.
    fn count_channels(&self) {
        if let Some(info) = self.rt.conn_info.get(&self.id) {
            info.channels
                .store(self.channels.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn open_channel(&mut self, ch: u16, ctx: &mut Context<Self>) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        let addr =
            ChannelActor::new(ch, ctx.address(), self.shared.clone(), vhost, &self.span).start();
        self.channels.insert(
            ch,
            Slot {
                addr,
                assembler: Assembler::new(self.rt.config.max_message_size),
                closing: false,
                batch: Vec::new(),
            },
        );
        self.count_channels();
        self.send(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
        );
    }

    fn start_heartbeats(&mut self, ctx: &mut Context<Self>) {
        if self.heartbeat == 0 {
            return;
        }
        let hb = Duration::from_secs(self.heartbeat as u64);
        let tick = (hb / 2).max(Duration::from_millis(500));
        ctx.run_interval(tick, move |a, ctx| {
            if a.last_read.elapsed() > hb * 2 {
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
    }

    /// Writes the shared buffer to the socket, one write at a time; whatever channels add
    /// meanwhile goes out in the next batch.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        self.shared.flush_requested.set(false);
        if self.writing {
            return;
        }
        let data = {
            let mut out = self.shared.out.borrow_mut();
            if out.is_empty() {
                drop(out);
                if self.state == State::Closed {
                    ctx.stop();
                }
                return;
            }
            out.split().freeze()
        };
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        self.writing = true;
        ctx.spawn(
            async move {
                let r = writer.write_all(&data).await.map(|()| data.len());
                (writer, r)
            }
            .into_actor(self)
            .map(|(writer, r), act, ctx| {
                act.writing = false;
                act.writer = Some(writer);
                act.last_write = Instant::now();
                if let Ok(n) = &r {
                    act.rt
                        .bytes_out
                        .fetch_add(*n as u64, std::sync::atomic::Ordering::Relaxed);
                }
                if r.is_err() {
                    ctx.stop();
                    return;
                }
                act.shared.release_deferred();
                act.flush(ctx);
                if act.paused && act.shared.out_len() <= OUT_HIGH {
                    act.resume(ctx);
                }
            }),
        );
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
        self.rt.conn_info.remove(&self.id);
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

/// Something that paused this connection's reading has moved: its channels caught up
/// with the commands handed to them, or a hot queue took its inbox in.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResumeRead;

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

/// Closes the connection from the server side (shutdown, operator).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ForceClose {
    /// The reply text given to the client (after "CONNECTION_FORCED - ").
    pub reason: String,
}

impl Handler<ForceClose> for Connection {
    type Result = ();
    fn handle(&mut self, m: ForceClose, ctx: &mut Context<Self>) {
        self.fail(AmqpError::new(ReplyCode::ConnectionForced, m.reason), ctx);
    }
}
