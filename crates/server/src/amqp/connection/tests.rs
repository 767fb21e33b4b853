//! A connection driven over an in-memory pipe instead of a socket: the transport is all
//! the connection needs, so the handshake can be tested without a listener or a port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use super::{Accepted, Connection, Transport};
use crate::broker::runtime::Runtime;
use crate::config::{Cli, Config};
use broker_wire::encode;
use broker_wire::frame::{Frame, PROTOCOL_HEADER};
use broker_wire::protocol::{connection, AMQPClass};
use broker_wire::types::{AMQPValue, FieldTable, LongString, ShortString};
use broker_wire::FrameDecoder;
use bytes::BytesMut;
use clap::Parser;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The client's end of the pipe and what it has read but not yet decoded.
struct Client {
    io: DuplexStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Client {
    async fn send(&mut self, m: connection::AMQPMethod) {
        let mut out = BytesMut::new();
        encode::method(&mut out, 0, &AMQPClass::Connection(m));
        self.io.write_all(&out).await.unwrap();
    }

    /// The next method frame on channel 0 (fails the test after 5 s).
    async fn recv(&mut self) -> connection::AMQPMethod {
        loop {
            match self.decoder.decode(&mut self.buf).unwrap() {
                Some(Frame::Method { channel: 0, method }) => match *method {
                    AMQPClass::Connection(m) => return m,
                    other => panic!("unexpected method {other:?}"),
                },
                Some(other) => panic!("unexpected frame {other:?}"),
                None => {}
            }
            let n = tokio::time::timeout(Duration::from_secs(5), self.io.read_buf(&mut self.buf))
                .await
                .expect("the connection answers")
                .unwrap();
            assert!(n > 0, "the connection closed the pipe");
        }
    }
}

/// Runs `test` against a connection served over an in-memory duplex on a worker thread.
fn with_connection<F, Fut>(test: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let sys = actix::System::new();
    sys.block_on(async {
        let config = Config::load(Cli::parse_from(["broker"])).unwrap();
        let arbiter = actix::Arbiter::new();
        let rt = Runtime::new(config, vec![arbiter.handle()], None).unwrap();
        let (client, server) = tokio::io::duplex(64 << 10);
        let (reader, writer) = tokio::io::split(server);
        let peer = "127.0.0.1:5999".parse().unwrap();
        Connection::spawn(
            Accepted::ready(peer, false, Transport::new(reader, writer)),
            rt,
        );
        test(Client {
            io: client,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(128 << 10),
        })
        .await;
        arbiter.stop();
    });
}

fn start_ok() -> connection::AMQPMethod {
    let mut caps = FieldTable::default();
    caps.insert("connection.blocked".into(), AMQPValue::Boolean(true));
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    connection::AMQPMethod::StartOk(connection::StartOk {
        client_properties: props,
        mechanism: ShortString::from("PLAIN"),
        response: LongString::from(&b"\0guest\0guest"[..]),
        locale: ShortString::from("en_US"),
    })
}

/// Protocol header to open-ok and a client close, all through the transport.
#[test]
fn a_connection_over_an_in_memory_pipe_shakes_hands() {
    with_connection(|mut c| async move {
        c.io.write_all(PROTOCOL_HEADER).await.unwrap();
        let connection::AMQPMethod::Start(start) = c.recv().await else {
            panic!("connection.start expected");
        };
        assert_eq!((start.version_major, start.version_minor), (0, 9));
        c.send(start_ok()).await;
        let connection::AMQPMethod::Tune(tune) = c.recv().await else {
            panic!("connection.tune expected");
        };
        c.send(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        }))
        .await;
        c.send(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }))
        .await;
        assert!(matches!(c.recv().await, connection::AMQPMethod::OpenOk(_)));
        c.send(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        }))
        .await;
        assert!(matches!(c.recv().await, connection::AMQPMethod::CloseOk(_)));
    });
}

/// A wrong protocol header gets the one we speak, then the transport is closed.
#[test]
fn a_wrong_header_over_the_pipe_gets_ours_and_the_end() {
    with_connection(|mut c| async move {
        c.io.write_all(b"HTTP/1.1").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.io.read_to_end(&mut got))
            .await
            .expect("the connection closes the pipe")
            .unwrap();
        assert_eq!(got, PROTOCOL_HEADER);
    });
}
