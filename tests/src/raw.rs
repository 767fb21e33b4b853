//! A raw AMQP client for bad-input tests: it performs the handshake by hand and then sends
//! whatever bytes a test wants, reading frames back with the broker's own decoder.

use broker_wire::encode;
use broker_wire::frame::Frame;
use broker_wire::protocol::{connection, AMQPClass};
use broker_wire::types::{FieldTable, LongString};
use broker_wire::FrameDecoder;
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw connection.
pub struct Raw {
    /// The socket.
    pub sock: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// What ended a connection or channel.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed {
    /// Channel the close came on (0 = connection).
    pub channel: u16,
    /// Reply code.
    pub code: u16,
    /// Reply text.
    pub text: String,
    /// Class id.
    pub class_id: u16,
    /// Method id.
    pub method_id: u16,
}

impl Raw {
    /// Connects without saying anything.
    pub async fn connect(port: u16) -> Raw {
        let sock = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Raw {
            sock,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(1 << 20),
        }
    }

    /// Connects and completes the handshake (frame_max 131072, heartbeat off).
    pub async fn open(port: u16) -> Raw {
        Self::open_with(port, 2047, 131_072).await
    }

    /// Handshake with chosen tune-ok values; stops after tune-ok if they are refused.
    pub async fn open_with(port: u16, channel_max: u16, frame_max: u32) -> Raw {
        Self::open_tuned(port, channel_max, frame_max, 0).await
    }

    /// Handshake with chosen tune-ok values, heartbeat included (the client then sends
    /// none: it is up to the test).
    pub async fn open_tuned(port: u16, channel_max: u16, frame_max: u32, heartbeat: u16) -> Raw {
        let mut r = Raw::connect(port).await;
        r.send(b"AMQP\x00\x00\x09\x01").await;
        r.expect_method().await; // start
        r.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: "PLAIN".into(),
                response: LongString::from(&b"\0guest\0guest"[..]),
                locale: "en_US".into(),
            })),
        )
        .await;
        r.expect_method().await; // tune
        r.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max,
                frame_max,
                heartbeat,
            })),
        )
        .await;
        r.method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        )
        .await;
        r
    }

    /// Sends bytes.
    pub async fn send(&mut self, b: &[u8]) {
        let _ = self.sock.write_all(b).await;
    }

    /// Sends one method frame.
    pub async fn method(&mut self, channel: u16, m: AMQPClass) {
        let mut out = BytesMut::new();
        encode::method(&mut out, channel, &m);
        self.send(&out).await;
    }

    /// Reads the next frame (None on EOF or after 5 s).
    pub async fn frame(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(f)) = self.decoder.decode(&mut self.buf) {
                return Some(f);
            }
            let n = tokio::time::timeout_at(deadline, self.sock.read_buf(&mut self.buf)).await;
            match n {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Reads raw bytes until EOF or 5 s.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = self.buf.to_vec();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.sock.read_to_end(&mut out)).await;
        out
    }

    /// channel.open on `ch`, then reads until its open-ok.
    pub async fn open_channel(&mut self, ch: u16) {
        use broker_wire::protocol::channel;
        self.method(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
        )
        .await;
        loop {
            if let AMQPClass::Channel(channel::AMQPMethod::OpenOk(_)) = self.expect_method().await {
                return;
            }
        }
    }

    /// basic.publish of `body` (one body frame, no properties) on channel `ch`.
    pub async fn publish(&mut self, ch: u16, exchange: &str, routing_key: &str, body: &[u8]) {
        use broker_wire::protocol::basic;
        self.method(
            ch,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        )
        .await;
        // header: class 60, weight 0, body size, no properties
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        self.send(&frame_bytes(2, ch, &header)).await;
        self.send(&frame_bytes(3, ch, body)).await;
    }

    /// Reads frames until a method arrives.
    pub async fn expect_method(&mut self) -> AMQPClass {
        loop {
            match self.frame().await {
                Some(Frame::Method { method, .. }) => return *method,
                Some(_) => continue,
                None => panic!("connection ended while a method was expected"),
            }
        }
    }

    /// Reads until a connection.close or channel.close arrives (None if the socket ends).
    pub async fn expect_close(&mut self) -> Option<Closed> {
        use broker_wire::protocol::channel;
        loop {
            match self.frame().await? {
                Frame::Method {
                    channel: ch,
                    method,
                } => match *method {
                    AMQPClass::Connection(connection::AMQPMethod::Close(c)) => {
                        return Some(Closed {
                            channel: ch,
                            code: c.reply_code,
                            text: c.reply_text.to_string(),
                            class_id: c.class_id,
                            method_id: c.method_id,
                        })
                    }
                    AMQPClass::Channel(channel::AMQPMethod::Close(c)) => {
                        return Some(Closed {
                            channel: ch,
                            code: c.reply_code,
                            text: c.reply_text.to_string(),
                            class_id: c.class_id,
                            method_id: c.method_id,
                        })
                    }
                    _ => continue,
                },
                _ => continue,
            }
        }
    }
}

/// Builds a frame by hand: type, channel, payload, frame-end.
pub fn frame_bytes(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&channel.to_be_bytes());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v.push(0xCE);
    v
}

/// A shortstr by hand: length byte and bytes (no check: tests send bad ones on purpose).
pub fn shortstr(s: &[u8]) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s);
    v
}

/// A method frame's payload by hand: class, method, encoded arguments.
pub fn method_payload(class: u16, method: u16, args: &[u8]) -> Vec<u8> {
    let mut v = class.to_be_bytes().to_vec();
    v.extend_from_slice(&method.to_be_bytes());
    v.extend_from_slice(args);
    v
}
