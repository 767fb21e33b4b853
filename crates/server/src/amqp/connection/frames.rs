//! Input: the protocol header, frames split and checked, channel-0 methods (handshake,
//! close, heartbeats), and content assembled per channel into commands for the channel
//! actors; channel.open and the channel table.

use super::*;

impl Connection {
    /// Processes what was read, then hands each channel its commands in one message.
    pub(super) fn process_input(&mut self, ctx: &mut Context<Self>) {
        self.process_frames(ctx);
        self.send_batches();
    }

    /// Sends every channel the commands batched for it.
    pub(super) fn send_batches(&mut self) {
        for ch in std::mem::take(&mut self.batched) {
            if let Some(slot) = self.channels.get_mut(&ch) {
                slot.send_batch();
            }
        }
    }

    pub(super) fn process_frames(&mut self, ctx: &mut Context<Self>) {
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
            self.send(0, handshake::start(self.link()));
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
    pub(super) fn refuse_protocol(&mut self, ctx: &mut Context<Self>) {
        self.shared
            .out
            .borrow_mut()
            .extend_from_slice(PROTOCOL_HEADER);
        self.state = State::Closed;
        self.flush(ctx);
    }

    pub(super) fn handle_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
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

    pub(super) fn connection_method(&mut self, m: AMQPClass, ctx: &mut Context<Self>) {
        let (cid, mid) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        let AMQPClass::Connection(m) = m else {
            self.fail(self.unexpected_method().on(cid, mid), ctx);
            return;
        };
        use connection::AMQPMethod as M;
        match (self.state, m) {
            (State::AwaitStartOk, M::StartOk(s)) => self.connection_start_ok(&s, ctx),
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
                Ok(v) => self.connection_open(v, o.virtual_host.as_str(), ctx),
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

    /// How the client reached us, for the SASL mechanisms.
    fn link(&self) -> handshake::Link<'_> {
        if self.tls {
            handshake::Link::Tls(self.client_cn.as_deref())
        } else {
            handshake::Link::Plain
        }
    }

    /// connection.start-ok: authenticates (unless the address is cooling down for failed
    /// logins), then offers connection.tune. A refused login counts towards the throttle.
    fn connection_start_ok(&mut self, s: &connection::StartOk, ctx: &mut Context<Self>) {
        let ip = self.peer.ip();
        let outcome = if self
            .rt
            .login_throttle
            .refuses(ip, std::time::Instant::now())
        {
            // opened before its address was cooled down: refused unchecked
            Err(handshake::throttled(s))
        } else {
            let r = handshake::authenticate(s, &self.rt.registry, ip, self.link());
            if let Err(handshake::LoginFailure::Refused { .. }) = &r {
                handshake::note_refused(&self.rt.login_throttle, ip);
            }
            r
        };
        match outcome {
            Ok((user, client)) => {
                self.gate
                    .client_understands_blocked(client.connection_blocked);
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

    /// connection.open of an allowed vhost: registers the connection with the runtime
    /// (shutdown, the management API) and answers open-ok.
    fn connection_open(&mut self, v: Arc<VHost>, vhost: &str, ctx: &mut Context<Self>) {
        self.vhost = Some(v);
        self.state = State::Open;
        self.rt
            .connections
            .insert(self.id, ctx.address().recipient());
        #[cfg(feature = "fault-injection")]
        self.rt
            .fault_targets
            .insert(self.id, ctx.address().recipient());
        self.send(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        let user = self.shared.user.borrow().clone();
        let local = self.local.or_else(|| self.rt.amqp_addr.get().copied());
        self.rt.conn_info.insert(
            self.id,
            Arc::new(crate::broker::runtime::ConnInfo {
                id: self.id,
                name: match local {
                    Some(l) => format!("{} -> {l}", self.peer),
                    None => self.peer.to_string(),
                },
                peer: self.peer,
                user: user.clone(),
                vhost: vhost.to_string(),
                client: self.client.properties.clone(),
                connected_at: crate::broker::runtime::now_ms(),
                channels: Default::default(),
                frame_max: self.decoder.frame_max,
                heartbeat: self.heartbeat,
                tls: self.tls,
            }),
        );
        let _e = self.span.enter();
        info!(vhost, %user, client = %self.client.product, tls = self.tls, "connection open");
    }

    /// A method channel 0 does not take in this state: 504 CHANNEL_ERROR with RabbitMQ's
    /// text, which names the state.
    pub(super) fn unexpected_method(&self) -> AmqpError {
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
    pub(super) fn login_failed(&mut self, f: handshake::LoginFailure, ctx: &mut Context<Self>) {
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

    pub(super) fn channel_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
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
        let Some(slot) = self.channels.get_mut(&ch) else {
            self.frame_without_channel(ch, &frame, ctx);
            return;
        };
        // during a content sequence every frame goes to the assembler, which refuses
        // methods with 505 UNEXPECTED_FRAME
        if slot.closing || (slot.assembler.is_idle() && channel_method(&frame).is_some()) {
            self.channel_class_frame(ch, &frame, ctx);
            return;
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
            Ok(None) => {
                // a body on its way is memory this connection makes the broker hold: it
                // counts as publishing, so a resource alarm holds it as it holds a
                // publisher (before, a client that never finished a message was never
                // held, however many channels' partial bodies it sent)
                if !slot.assembler.is_idle() {
                    self.shared.published.set(true);
                }
            }
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

    /// A frame on a channel that is not open: channel.open opens it, anything else is
    /// 504 CHANNEL_ERROR.
    fn frame_without_channel(&mut self, ch: u16, frame: &Frame, ctx: &mut Context<Self>) {
        if matches!(channel_method(frame), Some(channel::AMQPMethod::Open(_))) {
            self.open_channel(ch, ctx);
            return;
        }
        let (c, m) = match frame {
            Frame::Method { method, .. } => {
                (method.get_amqp_class_id(), method.get_amqp_method_id())
            }
            _ => (0, 0),
        };
        self.fail(
            AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")).on(c, m),
            ctx,
        );
    }

    /// channel.open, close and close-ok on an open channel, and every frame on a channel
    /// the server is closing (only close-ok, or the client's own close, ends it).
    fn channel_class_frame(&mut self, ch: u16, frame: &Frame, ctx: &mut Context<Self>) {
        let Some(slot) = self.channels.get_mut(&ch) else {
            return;
        };
        let method = channel_method(frame);
        if slot.closing {
            slot.send_batch();
            match method {
                Some(channel::AMQPMethod::CloseOk(_)) => {}
                Some(channel::AMQPMethod::Close(_)) => self.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                ),
                _ => return,
            }
            if let Some(s) = self.channels.remove(&ch) {
                self.count_channels();
                s.addr.do_send(Shutdown);
            }
            return;
        }
        match method {
            Some(channel::AMQPMethod::Open(_)) => self.fail(
                AmqpError::channel_error("second 'channel.open' seen").on(20, 10),
                ctx,
            ),
            Some(channel::AMQPMethod::Close(_)) => {
                if let Some(mut s) = self.channels.remove(&ch) {
                    self.count_channels();
                    s.send_batch();
                    s.addr.do_send(ClientClose);
                }
            }
            // a close-ok nothing asked for is ignored
            _ => {}
        }
    }

    /// Publishes the channel count to the management view, and gives back to the user's
    /// count the channels closed since.
    pub(super) fn count_channels(&mut self) {
        let open = self.channels.len();
        if open < self.counted_channels {
            if let Some(u) = &self.user_usage {
                u.channels.fetch_sub(
                    (self.counted_channels - open) as u64,
                    std::sync::atomic::Ordering::AcqRel,
                );
            }
            self.counted_channels = open;
        }
        if let Some(info) = self.rt.conn_info.get(&self.id) {
            info.channels
                .store(self.channels.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(super) fn open_channel(&mut self, ch: u16, ctx: &mut Context<Self>) {
        let Some(vhost) = self.vhost.clone() else {
            return;
        };
        if let Some(u) = &self.user_usage {
            let user = self.shared.user.borrow().clone();
            if let Err(e) = self.rt.registry.user_limits.open_channel(&user, u) {
                self.fail(e.on(20, 10), ctx);
                return;
            }
            self.counted_channels += 1;
        }
        let addr = crate::broker::supervise::start(|_| {
            ChannelActor::new(
                ch,
                ctx.address(),
                self.shared.clone(),
                vhost,
                self.rt.clone(),
                &self.span,
            )
        });
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
}

/// channel.open, close or close-ok, if the frame carries one (the methods the connection
/// handles itself; channel.flow goes to the channel).
fn channel_method(frame: &Frame) -> Option<&channel::AMQPMethod> {
    let Frame::Method { method, .. } = frame else {
        return None;
    };
    match &**method {
        AMQPClass::Channel(
            m @ (channel::AMQPMethod::Open(_)
            | channel::AMQPMethod::Close(_)
            | channel::AMQPMethod::CloseOk(_)),
        ) => Some(m),
        _ => None,
    }
}
