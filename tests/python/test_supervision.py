"""Supervision (issue 13): a panic anywhere in a connection, channel, queue or exchange
actor ends in a restart or a clean end, never a silent disappearance.

Needs a broker built with the `fault-injection` cargo feature (scripts/test.sh builds the
test binary with it): `POST /api/fault-injection` makes one actor panic in a handler, a
timer or a continuation. Each test asserts what the owning client sees, where the messages
are, that counts are released, and that a second client on the same worker (the broker
runs one worker here, so every actor shares it) keeps publishing and consuming throughout.
"""
import threading
import time
import uuid

import pika
import pytest

from conftest import BrokerProcess
from httpapi import Api, q

AT = ["handler", "timer", "continuation"]


def uniq(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def node():
    b = BrokerProcess(["--workers", "1"])
    yield b
    b.stop()


@pytest.fixture(scope="module")
def api(node):
    a = Api(node.http_url)
    r = a.post("/api/fault-injection", {"actor": "queue", "at": "handler", "name": "none"})
    assert r.status != 405 and r.status != 404 or b"queue not found" in r.body, (
        "the broker under test was built without the fault-injection feature "
        "(build with: cargo build -p broker-server --features fault-injection)"
    )
    return a


def connect(node, name=None):
    props = {"connection_name": name} if name else None
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, client_properties=props))


def inject(api, actor, at, name, channel=None):
    body = {"actor": actor, "at": at, "name": name}
    if channel is not None:
        body["channel"] = channel
    r = api.post("/api/fault-injection", body)
    assert r.status == 204, r


def panics(api, actor):
    text = api.get("/metrics").body.decode()
    for line in text.splitlines():
        if line.startswith(f'broker_actor_panics_total{{actor="{actor}"}}'):
            return int(line.split()[-1])
    raise AssertionError(f"no panic counter for {actor}")


def connection_name(api, user_name):
    for c in api.json("/api/connections"):
        if c.get("user_provided_name") == user_name:
            return c["name"]
    return None


class Bystander:
    """A second client on the same worker: publishes and gets one message at a time on its
    own queue, all the while, and records every round trip and any error."""

    def __init__(self, node):
        self.conn = connect(node)
        self.ch = self.conn.channel()
        self.queue = uniq("bystander")
        self.ch.queue_declare(self.queue, exclusive=True)
        self.rounds = 0
        self.error = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        try:
            while not self.stop.is_set():
                body = str(self.rounds).encode()
                self.ch.basic_publish("", self.queue, body)
                deadline = time.monotonic() + 5
                while True:
                    _, _, got = self.ch.basic_get(self.queue, auto_ack=True)
                    if got is not None:
                        assert got == body, (got, body)
                        break
                    assert time.monotonic() < deadline, "bystander's message did not come back"
                self.rounds += 1
        except Exception as e:  # noqa: BLE001 - recorded and asserted by the test
            self.error = e

    def progressed_after(self, rounds, timeout=5):
        deadline = time.monotonic() + timeout
        while self.rounds <= rounds + 20 and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        return self.rounds > rounds + 20

    def finish(self):
        self.stop.set()
        self.thread.join(10)
        assert self.error is None, f"bystander failed: {self.error!r}"
        assert self.rounds > 0
        self.conn.close()


@pytest.fixture
def bystander(node, api):
    b = Bystander(node)
    yield b
    b.finish()


def wait_until(check, timeout=5.0, conn=None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition never became true"
        if conn is not None:
            conn.process_data_events(time_limit=0.05)
        else:
            time.sleep(0.05)


@pytest.mark.parametrize("at", AT)
def test_queue_panic_restarts_it_with_stored_messages_and_cancels_consumers(node, api, bystander, at):
    conn = connect(node)
    ch = conn.channel()
    name = uniq("sup-q")
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    ch.basic_publish("", name, b"transient", pika.BasicProperties(delivery_mode=1))
    cancelled, got = [], []
    ch.basic_qos(prefetch_count=1)
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(name, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    wait_until(lambda: got, conn=conn)
    assert got[0][1] == b"m0"
    before = panics(api, "queue")
    rounds = bystander.rounds

    inject(api, "queue", at, name)

    # the consumer is cancelled with basic.cancel; the channel stays open
    wait_until(lambda: cancelled, conn=conn)
    assert cancelled == [tag]
    assert ch.is_open and conn.is_open
    assert panics(api, "queue") == before + 1
    # the queue is back at the same name: its stored messages reloaded (the one that was
    # out to the consumer redelivered), the transient one lost
    bodies = []
    while True:
        m, _, body = ch.basic_get(name, auto_ack=True)
        if m is None:
            break
        bodies.append((body, m.redelivered))
    assert bodies == [(b"m0", True), (b"m1", False), (b"m2", False)]
    # and it takes new messages and consumers as before
    ch.basic_publish("", name, b"after")
    m, _, body = ch.basic_get(name, auto_ack=True)
    assert body == b"after"
    assert bystander.progressed_after(rounds)
    ch.queue_delete(name)
    conn.close()


@pytest.mark.parametrize("at", AT)
def test_exchange_panic_restarts_it_from_its_bindings(node, api, bystander, at):
    conn = connect(node)
    ch = conn.channel()
    x, qa, qb = uniq("sup-x"), uniq("sup-qa"), uniq("sup-qb")
    ch.exchange_declare(x, "topic", durable=True)
    ch.queue_declare(qa, exclusive=True)
    ch.queue_declare(qb, exclusive=True)
    ch.queue_bind(qa, x, "a.*")
    ch.queue_bind(qb, x, "#.b")
    before = panics(api, "exchange")
    rounds = bystander.rounds

    inject(api, "exchange", at, x)
    wait_until(lambda: panics(api, "exchange") == before + 1)

    # routing is unchanged, and the exchange takes new bindings and unbinds
    ch.basic_publish(x, "a.b", b"both")
    assert ch.basic_get(qa, auto_ack=True)[2] == b"both"
    assert ch.basic_get(qb, auto_ack=True)[2] == b"both"
    ch.queue_unbind(qb, x, "#.b")
    ch.queue_bind(qb, x, "c")
    ch.basic_publish(x, "a.b", b"only-a")
    ch.basic_publish(x, "c", b"only-b")
    assert ch.basic_get(qa, auto_ack=True)[2] == b"only-a"
    assert ch.basic_get(qb, auto_ack=True)[2] == b"only-b"
    assert ch.basic_get(qa, auto_ack=True)[0] is None
    bindings = api.json(f"/api/exchanges/%2F/{q(x)}/bindings/source")
    assert sorted(b["routing_key"] for b in bindings) == ["a.*", "c"]
    assert bystander.progressed_after(rounds)
    ch.exchange_delete(x)
    conn.close()


@pytest.mark.parametrize("at", AT)
def test_channel_panic_closes_it_with_541_and_requeues_its_unacked(node, api, bystander, at):
    user_name = uniq("victim")
    conn = connect(node, name=user_name)
    victim = conn.channel()
    other = conn.channel()
    name = uniq("sup-ch")
    other.queue_declare(name, durable=True)
    for i in range(2):
        other.basic_publish("", name, f"m{i}".encode())
    got = []
    victim.basic_qos(prefetch_count=10)
    victim.basic_consume(name, lambda c, m, p, b: got.append(b))
    wait_until(lambda: len(got) == 2, conn=conn)
    before = panics(api, "channel")
    rounds = bystander.rounds
    cname = wait_until(lambda: connection_name(api, user_name))

    closed = []
    victim._impl.add_on_close_callback(lambda _ch, reason: closed.append(reason))

    inject(api, "channel", at, cname, channel=victim.channel_number)

    # the client sees channel.close 541 on that channel only
    wait_until(lambda: closed, conn=conn)
    assert isinstance(closed[0], pika.exceptions.ChannelClosedByBroker)
    assert closed[0].reply_code == 541
    assert conn.is_open and other.is_open
    assert panics(api, "channel") == before + 1
    # its unacked messages are back in the queue, redelivered, and it has no consumer
    m0 = other.basic_get(name, auto_ack=True)
    m1 = other.basic_get(name, auto_ack=True)
    assert [m0[2], m1[2]] == [b"m0", b"m1"]
    assert m0[0].redelivered and m1[0].redelivered
    assert wait_until(lambda: api.json(f"/api/queues/%2F/{q(name)}")["consumers"] == 0)
    # the connection opens new channels as before
    again = conn.channel()
    again.basic_publish("", name, b"after")
    assert again.basic_get(name, auto_ack=True)[2] == b"after"
    assert bystander.progressed_after(rounds)
    other.queue_delete(name)
    conn.close()


@pytest.mark.parametrize("at", AT)
def test_connection_panic_closes_it_with_541_and_releases_everything(node, api, bystander, at):
    vhost = uniq("sup-v")
    api.ok("PUT", f"/api/vhosts/{q(vhost)}", expect=(201,))
    api.ok("PUT", f"/api/permissions/{q(vhost)}/guest",
           {"configure": ".*", "write": ".*", "read": ".*"}, expect=(201, 204))
    api.ok("PUT", f"/api/vhost-limits/{q(vhost)}/max-connections", {"value": 1}, expect=(201, 204))
    user_name = uniq("victim")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.port, vhost, pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, client_properties={"connection_name": user_name}))
    ch = conn.channel()
    excl = uniq("sup-excl")
    durable = uniq("sup-dur")
    ch.queue_declare(excl, exclusive=True)
    ch.queue_declare(durable, durable=True)
    ch.basic_publish("", durable, b"m0")
    got = []
    ch.basic_consume(durable, lambda c, m, p, b: got.append(b))
    wait_until(lambda: got, conn=conn)
    cname = wait_until(lambda: connection_name(api, user_name))
    before = panics(api, "connection")
    rounds = bystander.rounds

    inject(api, "connection", at, cname)

    # the client sees connection.close 541
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.05)
    assert e.value.reply_code == 541
    assert panics(api, "connection") == before + 1
    # its exclusive queue is gone, its unacked message requeued, it is no longer listed,
    # and the vhost's connection limit counts it no more
    vq = q(vhost)
    wait_until(lambda: api.get(f"/api/queues/{vq}/{q(excl)}").status == 404)
    wait_until(lambda: api.json(f"/api/queues/{vq}/{q(durable)}")["messages_ready"] == 1)
    wait_until(lambda: connection_name(api, user_name) is None)
    again = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", node.port, vhost, pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5))
    ch = again.channel()
    m, _, body = ch.basic_get(durable, auto_ack=True)
    assert body == b"m0" and m.redelivered
    again.close()
    assert bystander.progressed_after(rounds)
    api.ok("DELETE", f"/api/vhosts/{vq}", expect=(204,))
