"""The hashing exchanges: x-consistent-hash (the API of RabbitMQ's consistent-hash
plugin: binding keys are weights; hash on the routing key, a header or a property) and
x-modulus-hash (RabbitMQ 4.3: hash of the routing key mod the bound destinations).

Each test declares queues, binds them, publishes with confirms (so every message is
routed before the counts are read) and asserts what arrived in each queue: the shares,
that one key (header value, property) always reaches one queue, the plugin's 406 texts
for bad arguments and weights, and that a durable exchange routes every key to the same
queue after a restart and after kill -9.
"""
import pika
import pika.exceptions
import pytest

from conftest import connect, ready_count, uniq
from httpapi import amqp, api, q  # noqa: F401

N = 4000


def confirmed(conn):
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def setup(ch, scratch, kind, weights, arguments=None, durable=False):
    x = scratch.exchange("hash")
    ch.exchange_declare(x, kind, durable=durable, arguments=arguments)
    queues = []
    for w in weights:
        q = scratch.queue("hq")
        ch.queue_declare(q, durable=durable)
        ch.queue_bind(q, x, routing_key=str(w))
        queues.append(q)
    return x, queues


def counts(ch, queues):
    return [ready_count(ch, q) for q in queues]


def drain(ch, q):
    """The bodies in `q`, in order (all of them; the publish was confirmed)."""
    out = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body.decode())


@pytest.mark.parametrize("kind", ["x-consistent-hash", "x-modulus-hash"])
def test_equal_weights_share_evenly_and_a_key_keeps_its_queue(conn, scratch, kind):
    ch = confirmed(conn)
    x, queues = setup(ch, scratch, kind, [1, 1, 1, 1])
    for i in range(N):
        ch.basic_publish(x, f"key-{i}", f"key-{i}".encode())
    got = counts(ch, queues)
    assert sum(got) == N, got
    for c in got:
        assert abs(c - N / 4) <= N / 4 * 0.15, got
    # the same keys again land where they did
    first = {q: set(drain(ch, q)) for q in queues}
    for i in range(0, N, 7):
        ch.basic_publish(x, f"key-{i}", f"key-{i}".encode())
    for q in queues:
        assert set(drain(ch, q)) <= first[q]


def test_weights_set_the_shares(conn, scratch):
    ch = confirmed(conn)
    x, (light, heavy) = setup(ch, scratch, "x-consistent-hash", [1, 2])
    for i in range(N):
        ch.basic_publish(x, str(i), b"m")
    a, b = counts(ch, [light, heavy])
    assert a + b == N
    assert 1.7 <= b / a <= 2.3, (a, b)


def test_hash_header_routes_by_the_header(conn, scratch):
    ch = confirmed(conn)
    x, queues = setup(ch, scratch, "x-consistent-hash", [1, 1, 1], {"hash-header": "user"})
    for i in range(600):
        user = f"u{i % 30}"
        props = pika.BasicProperties(headers={"user": user})
        ch.basic_publish(x, f"rk-{i}", user.encode(), properties=props)
    seen = {}
    for q in queues:
        for user in drain(ch, q):
            assert seen.setdefault(user, q) == q, f"{user} reached two queues"
    assert len(seen) == 30
    assert len(set(seen.values())) == 3
    # messages without the header all go to one queue, as in the plugin
    for i in range(50):
        ch.basic_publish(x, f"other-{i}", b"none")
    assert sorted(counts(ch, queues)) == [0, 0, 50]


@pytest.mark.parametrize("prop", ["message_id", "correlation_id", "timestamp"])
def test_hash_property_routes_by_the_property(conn, scratch, prop):
    ch = confirmed(conn)
    x, queues = setup(ch, scratch, "x-consistent-hash", [1, 1, 1], {"hash-property": prop})
    for i in range(600):
        v = i % 30
        value = 1_700_000_000 + v if prop == "timestamp" else f"id-{v}"
        props = pika.BasicProperties(**{prop: value})
        ch.basic_publish(x, f"rk-{i}", str(v).encode(), properties=props)
    seen = {}
    for q in queues:
        for v in drain(ch, q):
            assert seen.setdefault(v, q) == q, f"{prop} {v} reached two queues"
    assert len(seen) == 30
    assert len(set(seen.values())) == 3


def refused(conn, declare):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        declare(ch)
    return e.value.reply_code, e.value.reply_text


def test_bad_arguments_are_refused_with_the_plugins_texts(broker, scratch):
    conn = connect(broker)
    try:
        x = scratch.exchange("bad")
        args = {"hash-header": "h", "hash-property": "message_id"}
        assert refused(conn, lambda ch: ch.exchange_declare(x, "x-consistent-hash", arguments=args)) == (
            406, "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive")
        args = {"hash-property": "app_id"}
        assert refused(conn, lambda ch: ch.exchange_declare(x, "x-consistent-hash", arguments=args)) == (
            406, "PRECONDITION_FAILED - Unsupported property: app_id")
        ch = conn.channel()
        ch.exchange_declare(x, "x-consistent-hash")
        q = scratch.queue("bad")
        ch.queue_declare(q)
        assert refused(conn, lambda ch: ch.queue_bind(q, x, routing_key="heavy")) == (
            406, 'PRECONDITION_FAILED - The binding key must be an integer: <<"heavy">>')
        assert refused(conn, lambda ch: ch.queue_bind(q, x, routing_key="0")) == (
            406, "PRECONDITION_FAILED - The binding key must be greater than 0")
        # a refused bind costs nothing: the channel's connection goes on
        ch = conn.channel()
        ch.queue_bind(q, x, routing_key="3")
        # a modulus-hash exchange ignores binding keys
        m = scratch.exchange("mod")
        ch.exchange_declare(m, "x-modulus-hash")
        ch.queue_bind(q, m, routing_key="anything")
    finally:
        conn.close()


def test_exchange_destinations_are_routed_through(conn, scratch):
    ch = confirmed(conn)
    x = scratch.exchange("hash")
    ch.exchange_declare(x, "x-consistent-hash")
    inner = scratch.exchange("inner")
    ch.exchange_declare(inner, "fanout")
    q_direct, q_inner = scratch.queue("d"), scratch.queue("i")
    for q in (q_direct, q_inner):
        ch.queue_declare(q)
    ch.queue_bind(q_direct, x, routing_key="1")
    ch.exchange_bind(inner, x, routing_key="1")
    ch.queue_bind(q_inner, inner)
    for i in range(1000):
        ch.basic_publish(x, f"k{i}", b"m")
    a, b = counts(ch, [q_direct, q_inner])
    assert a + b == 1000 and 350 <= a <= 650, (a, b)


def placement(ch, queues):
    """Which queue each message body is in (each body once)."""
    return {body: q for q in queues for body in drain(ch, q)}


def publish_keys(ch, x, keys):
    """Through the consistent-hash exchange (hashing the `order` header, the routing key
    says nothing) and the modulus-hash one (hashing the routing key)."""
    for k in keys:
        ch.basic_publish(x, "rk", f"c:{k}".encode(), properties=pika.BasicProperties(headers={"order": k}))
        ch.basic_publish(x + "-m", k, f"m:{k}".encode())


@pytest.mark.parametrize("how", ["restart", "kill -9"])
def test_a_durable_exchange_routes_the_same_keys_the_same_way_after_a_restart(own_broker_factory, how):
    b = own_broker_factory()
    x = uniq("chx")
    queues = [uniq("chq") for _ in range(5)]
    keys = [f"order-{i}" for i in range(500)]
    c = connect(b.port)
    ch = c.channel()
    ch.exchange_declare(x, "x-consistent-hash", durable=True, arguments={"hash-header": "order"})
    ch.exchange_declare(x + "-m", "x-modulus-hash", durable=True)
    # bound out of name order: the route must not depend on the order they come back in
    for q, w in zip(reversed(queues), [1, 2, 1, 3, 1]):
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, x, routing_key=str(w))
        ch.queue_bind(q, x + "-m", routing_key="")
    ch = confirmed(c)
    publish_keys(ch, x, keys)
    before = placement(ch, queues)
    c.close()
    assert len(before) == 2 * len(keys)
    assert len(set(before.values())) == 5
    if how == "restart":
        b.restart()
    else:
        b.proc.kill()
        b.proc.wait(timeout=5)
        b._launch()
    c = connect(b.port)
    try:
        ch = confirmed(c)
        publish_keys(ch, x, keys)
        assert placement(ch, queues) == before
    finally:
        c.close()


def test_the_api_lists_the_hashing_types_and_its_publish_hashes_properties(api, amqp, scratch):
    overview = {t["name"]: t["description"] for t in api.json("/api/overview")["exchange_types"]}
    assert overview["x-consistent-hash"] == "Consistent Hashing Exchange"
    assert overview["x-modulus-hash"] == "Modulus Hashing Exchange"
    assert {"direct", "fanout", "topic", "headers"} <= set(overview)
    node = api.json("/api/nodes")[0]
    assert {"x-consistent-hash", "x-modulus-hash"} <= {t["name"] for t in node["exchange_types"]}
    # the HTTP publish carries the message's properties to the hash
    ch = amqp().channel()
    x, queues = setup(ch, scratch, "x-consistent-hash", [1, 1, 1], {"hash-property": "message_id"})
    for i in range(90):
        body = {"routing_key": f"rk{i}", "payload": f"{i % 9}", "payload_encoding": "string",
                "properties": {"message_id": f"id-{i % 9}"}}
        assert api.post(f"/api/exchanges/%2F/{q(x)}/publish", body).json() == {"routed": True}
    seen = {}
    for queue in queues:
        for v in drain(ch, queue):
            assert seen.setdefault(v, queue) == queue
    assert len(seen) == 9
