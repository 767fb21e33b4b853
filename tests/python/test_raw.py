"""Raw sockets, no pika: protocol header negotiation and silent clients."""
import socket
import struct
import time

import pika.spec
import pytest

AMQP_0_9_1 = b"AMQP\x00\x00\x09\x01"
FRAME_END = 0xCE


def open_socket(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(s, timeout=5.0):
    """Everything the peer sends until it closes the socket; (bytes, closed?)."""
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return out, False
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return out, False
        except ConnectionResetError:
            return out, True
        if not d:
            return out, True
        out += d


def read_exactly(s, n, timeout=5.0):
    out = b""
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out after {out!r}"
        s.settimeout(left)
        d = s.recv(n - len(out))
        assert d, f"socket closed after {out!r}"
        out += d
    return out


def read_frame(s):
    head = read_exactly(s, 7)
    if head.startswith(b"AMQP"):
        rest, _ = read_until_closed(s, timeout=1.0)
        pytest.fail(f"expected a frame, the broker refused the protocol header with {head + rest!r}")
    ftype, channel, size = struct.unpack(">BHI", head)
    payload = read_exactly(s, size)
    (end,) = read_exactly(s, 1)
    assert end == FRAME_END
    return ftype, channel, payload


def read_connection_start(s):
    ftype, channel, payload = read_frame(s)
    assert (ftype, channel) == (1, 0)
    class_id, method_id = struct.unpack(">HH", payload[:4])
    assert (class_id, method_id) == (10, 10), "expected connection.start"
    start = pika.spec.Connection.Start()
    start.decode(payload[4:])
    return start


def assert_is_0_9_1_start(start):
    assert (start.version_major, start.version_minor) == (0, 9)
    assert b"PLAIN" in start.mechanisms.split()
    assert b"en_US" in start.locales.split()
    caps = start.server_properties["capabilities"]
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify", "exchange_exchange_bindings",
                "connection.blocked", "authentication_failure_close", "per_consumer_qos"):
        assert caps.get(cap) is True, cap


# --------------------------------------------------------------------------- protocol header


def test_amqp_0_9_1_header_gets_connection_start(broker):
    with open_socket(broker) as s:
        s.sendall(AMQP_0_9_1)
        assert_is_0_9_1_start(read_connection_start(s))


@pytest.mark.parametrize(
    "header",
    [
        b"AMQP\x00\x00\x09\x02",  # unknown revision
        b"AMQP\x00\x00\x08\x00",
        b"AMQP\x00\x00\x0a\x00",  # "1.0"-ish
        b"AMQP\x01\x01\x00\x0a",
        b"AMQP\x03\x01\x00\x00",  # AMQP 1.0 SASL header
        b"AMQX\x00\x00\x09\x01",  # not AMQP at all
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ],
    ids=lambda h: repr(h)[2:-1],
)
def test_unsupported_header_gets_0_9_1_header_back_then_close(broker, header):
    with open_socket(broker) as s:
        s.sendall(header)
        data, closed = read_until_closed(s)
        assert data == AMQP_0_9_1
        assert closed, "the broker must close the socket after refusing the header"


def test_amqp_0_9_header_is_treated_as_0_9_1(broker):
    """RabbitMQ accepts the AMQP 0-9 header (AMQP 1 1 0 9) and speaks 0-9-1 on it
    (rabbit_reader: "the protocol header for 0-9, which we can safely treat as though it
    were 0-9-1"): the answer is connection.start 0-9, not a refusal."""
    with open_socket(broker) as s:
        s.sendall(b"AMQP\x01\x01\x00\x09")
        assert_is_0_9_1_start(read_connection_start(s))


def test_header_sent_byte_by_byte(broker):
    with open_socket(broker) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in AMQP_0_9_1:
            s.sendall(bytes([b]))
            time.sleep(0.01)
        assert_is_0_9_1_start(read_connection_start(s))


# --------------------------------------------------------------------------- silent clients


def test_silent_client_is_kept_for_a_few_seconds(broker):
    """Connect and send nothing: the broker neither writes nor hangs up during the first
    seconds (RabbitMQ waits handshake_timeout = 10 s); the handshake then still works."""
    with open_socket(broker) as s:
        data, closed = read_until_closed(s, timeout=3.0)
        assert (data, closed) == (b"", False)
        s.sendall(AMQP_0_9_1)
        assert_is_0_9_1_start(read_connection_start(s))


def test_silent_client_closed_after_short_handshake_timeout(own_broker_factory):
    """Same with our --handshake-timeout-ms flag set low: the socket is closed, silently,
    once the timeout has passed."""
    b = own_broker_factory("--handshake-timeout-ms", "1000")
    with open_socket(b.port) as s:
        t0 = time.monotonic()
        data, closed = read_until_closed(s, timeout=6.0)
        elapsed = time.monotonic() - t0
        assert closed, "never closed"
        assert data == b""
        assert 0.8 <= elapsed <= 4.0, elapsed


@pytest.mark.slow
def test_silent_client_closed_after_ten_seconds(broker):
    """The default handshake timeout is RabbitMQ's 10 s."""
    with open_socket(broker) as s:
        t0 = time.monotonic()
        data, closed = read_until_closed(s, timeout=15.0)
        elapsed = time.monotonic() - t0
        assert closed and data == b""
        assert 9.5 <= elapsed <= 13.0, elapsed
