//! The connection's I/O loops: opening the transport on the worker thread, one read at a
//! time (each asked of the [`ReadGate`](super::gate::ReadGate) first), and one write at a
//! time of the shared buffer. The gate decides whether to read; this file only carries
//! out its answer, holds and resumes.

use super::*;
use bytes::BufMut;

impl Connection {
    /// Opens an accepted client's transport on this worker thread, then starts reading.
    pub(super) fn open_transport(opening: Opening, ctx: &mut Context<Self>) {
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(opening).map(|r, act, ctx| match r {
                Ok(t) => {
                    act.reader = Some(t.reader);
                    act.writer = Some(t.writer);
                    act.client_cn = t.client_cn;
                    act.local = t.local;
                    act.flush(ctx);
                    act.schedule_read(ctx);
                }
                Err(e) => {
                    let _e = act.span.enter();
                    warn!("cannot open the connection: {e}");
                    ctx.stop();
                }
            }),
        );
    }

    /// Reads once more, unless the gate holds reading (then flushes and waits to be
    /// woken).
    pub(super) fn schedule_read(&mut self, ctx: &mut Context<Self>) {
        if self.reader.is_none() || matches!(self.state, State::Closed | State::Silenced) {
            return;
        }
        let publishing = self.state == State::Open && self.shared.published.get();
        if let Some(hold) = self
            .gate
            .check(publishing, self.rt.alarm(), || ctx.address().recipient())
        {
            self.flush(ctx);
            self.gate.hold(hold, ctx);
            return;
        }
        // the gate may just have queued connection.unblocked: send it now, or a client
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
        // a publisher with a large fanout reads less at once: each byte becomes that many
        // queue copies before pacing can look at them again
        let limit = self.shared.read_limit();
        ctx.spawn(
            async move {
                let r = reader.read_buf(&mut (&mut buf).limit(limit)).await;
                (reader, buf, r)
            }
            .into_actor(self)
            .map(|(reader, buf, r), act, ctx| {
                act.reader = Some(reader);
                act.rbuf = buf;
                act.on_read(r, ctx);
            }),
        );
    }

    /// One read finished: processes the frames it completed and reads on, or ends the
    /// connection at end of stream or a read error.
    fn on_read(&mut self, r: std::io::Result<usize>, ctx: &mut Context<Self>) {
        match r {
            Ok(0) | Err(_) => {
                if !matches!(
                    self.state,
                    State::Closed | State::Closing | State::ClosedByPeer
                ) {
                    let _e = self.span.enter();
                    info!("client closed the socket");
                }
                ctx.stop();
            }
            Ok(n) => {
                self.rt
                    .bytes_in
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                self.last_read = Instant::now();
                let res = catch_unwind(AssertUnwindSafe(|| self.process_input(ctx)));
                if res.is_err() {
                    self.fail(AmqpError::internal("internal error"), ctx);
                }
                self.flush(ctx);
                self.schedule_read(ctx);
            }
        }
    }

    /// Something that held reading may have moved ([`ResumeRead`], a finished write, the
    /// gate's timer): reads again if held, and the gate holds it again if still needed.
    pub(super) fn resume(&mut self, ctx: &mut Context<Self>) {
        if self.gate.release(ctx) {
            self.schedule_read(ctx);
        }
    }

    /// Writes the shared buffer to the transport, one write at a time; whatever channels
    /// add meanwhile goes out in the next batch. Before the transport is open the buffer
    /// waits for it.
    pub(super) fn flush(&mut self, ctx: &mut Context<Self>) {
        self.shared.flush_requested.set(false);
        if self.writing {
            return;
        }
        if self.shared.out_len() == 0 {
            if self.state == State::Closed {
                ctx.stop();
            }
            return;
        }
        let Some(mut writer) = self.writer.take() else {
            return;
        };
        let data = self.shared.take_out();
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
                act.shared.shrink_out();
                act.last_write = Instant::now();
                let Ok(n) = r else {
                    ctx.stop();
                    return;
                };
                act.rt
                    .bytes_out
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                act.shared.release_deferred();
                act.flush(ctx);
                if act.gate.wakes_on_write() {
                    act.resume(ctx);
                }
            }),
        );
    }
}
