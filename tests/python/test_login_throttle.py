"""The failed-login throttle (`--login-failure-limit`, `--login-failure-window-secs`,
`--login-failure-cooldown-secs`): after N refused AMQP logins from one address within the
window, that address's new connections are closed at accept (no connection.start) and a
login on a connection it opened earlier is refused with 403 even with good credentials,
until the cool-down has passed. Other addresses (127.0.0.2 here) and connections already
open are not touched; 0 turns it off. Every test starts its own broker, so the shared
broker's own bad logins (other suites) never count here."""
import socket
import struct
import time
import urllib.request

import pika
import pytest
from pika import frame, spec

from conftest import uniq

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"
REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"


def connect(port, password="guest"):
    params = pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", password),
        connection_attempts=1, socket_timeout=5,
    )
    return pika.BlockingConnection(params)


def bad_login(port):
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        connect(port, password="wrong")
    assert REFUSED in str(info.value)


def read_frame(s, buf=b""):
    """One frame from the socket: (frame, rest), or (None, b"") when the peer closed."""
    while True:
        if len(buf) >= 7:
            size = struct.unpack(">I", buf[3:7])[0]
            if len(buf) >= size + 8:
                _, f = frame.decode_frame(buf[: size + 8])
                return f, buf[size + 8:]
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            d = b""
        if not d:
            return None, b""
        buf += d


class RawClient:
    """An AMQP client by hand, so that a test can stop between connection.start and its
    login, and choose its source address."""

    def __init__(self, port, source="127.0.0.1"):
        self.s = socket.socket()
        self.s.settimeout(5)
        self.s.bind((source, 0))
        self.s.connect(("127.0.0.1", port))
        try:
            self.s.sendall(AMQP_HEADER)
        except OSError:  # closed at accept, already reset
            self.start, self.rest = None, b""
            return
        self.start, self.rest = read_frame(self.s)

    def login(self, password):
        """Sends start-ok (PLAIN, announcing authentication_failure_close); returns the
        method that answers it."""
        ok = spec.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\0guest\0{password}", locale="en_US",
        )
        self.s.sendall(frame.Method(0, ok).marshal())
        f, self.rest = read_frame(self.s, self.rest)
        return f.method if f is not None else None

    def close(self):
        self.s.close()


def metrics(b):
    with urllib.request.urlopen(b.http_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("broker_login"):
            name, value = line.rsplit(" ", 1)
            out[name] = int(float(value))
    return out


def round_trip(conn):
    ch = conn.channel()
    q = uniq("throttle")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"still here")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == b"still here"


@pytest.mark.ours_only
def test_failed_logins_cool_an_address_down(own_broker_factory):
    cooldown = 3
    b = own_broker_factory("--login-failure-limit", "3", "--login-failure-window-secs", "60",
                           "--login-failure-cooldown-secs", str(cooldown))
    established = connect(b.port)
    waiting = RawClient(b.port)  # accepted before the cool-down, logs in during it
    assert isinstance(waiting.start.method, spec.Connection.Start)

    bad_login(b.port)
    bad_login(b.port)
    before_third = time.monotonic()
    bad_login(b.port)

    # a new connection from 127.0.0.1 is closed at accept: no connection.start
    fresh = RawClient(b.port)
    assert fresh.start is None
    fresh.close()
    with pytest.raises(pika.exceptions.AMQPConnectionError) as info:
        connect(b.port)
    assert not isinstance(info.value, pika.exceptions.ProbableAuthenticationError)

    # the connection opened earlier is refused, good password or not
    answer = waiting.login("guest")
    assert isinstance(answer, spec.Connection.Close)
    assert (answer.reply_code, answer.reply_text.startswith(REFUSED)) == (403, True), answer
    waiting.close()

    # another address is not affected: it logs in
    other = RawClient(b.port, source="127.0.0.2")
    assert isinstance(other.start.method, spec.Connection.Start)
    assert isinstance(other.login("guest"), spec.Connection.Tune)
    other.close()

    # nor is the connection that was already open
    round_trip(established)

    m = metrics(b)
    assert m["broker_login_failures_total"] == 3
    assert m["broker_login_throttled_total"] == 1
    assert m["broker_login_throttle_refused_total"] == 3  # raw, pika, the waiting login
    assert m["broker_login_throttled_addresses"] == 1
    assert "login throttled: 3 failed logins from 127.0.0.1" in b.log_tail(20000)

    # after the cool-down the address is served again
    deadline = time.monotonic() + cooldown + 10
    while True:
        probe = RawClient(b.port)
        served = probe.start is not None
        probe.close()
        if served:
            break
        assert time.monotonic() < deadline, "still refused long after the cool-down"
        time.sleep(0.1)
    assert time.monotonic() - before_third >= cooldown
    conn = connect(b.port)
    round_trip(conn)
    conn.close()
    assert metrics(b)["broker_login_throttled_addresses"] == 0
    established.close()


@pytest.mark.ours_only
def test_zero_turns_the_throttle_off(own_broker_factory):
    b = own_broker_factory("--login-failure-limit", "0")
    for _ in range(12):
        bad_login(b.port)
    conn = connect(b.port)
    round_trip(conn)
    conn.close()
    m = metrics(b)
    assert (m["broker_login_failures_total"], m["broker_login_throttled_total"]) == (12, 0)


@pytest.mark.ours_only
def test_the_default_is_ten_failures(own_broker_factory):
    b = own_broker_factory()
    for _ in range(9):
        bad_login(b.port)
    conn = connect(b.port)  # nine: still served
    bad_login(b.port)
    assert RawClient(b.port).start is None
    round_trip(conn)
    conn.close()
