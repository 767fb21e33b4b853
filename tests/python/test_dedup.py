"""Message deduplication (LavinMQ's `x-message-deduplication` on exchanges and queues,
with `x-cache-size`, `x-cache-ttl`, `x-deduplication-header` and the per-message
`x-cache-ttl` header), driven through pika as a client uses it.

A duplicate at an exchange is routed nowhere: with mandatory it comes back
(basic.return), and in confirm mode it is acked (never left unanswered). A duplicate
at a queue is not enqueued there; other queues still get it. A durable queue's cache
survives a restart and a kill -9 for confirmed persistent messages: beyond LavinMQ,
whose cache is in memory only.
"""
import time

import pika
import pytest

from conftest import connect, get_n, ready_count, uniq
from httpapi import Api, q

pytestmark = pytest.mark.ours_only

ON = {"x-message-deduplication": True}


def hdr(key, **more):
    h = {"x-deduplication-header": key} if key is not None else {}
    h.update(more)
    return pika.BasicProperties(headers=h)


def routed(ch, exchange, rk, key, **more):
    """Publishes with mandatory in confirm mode: True if routed, False if returned."""
    try:
        ch.basic_publish(exchange, rk, b"m", hdr(key, **more), mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False


@pytest.fixture
def ch(conn):
    c = conn.channel()
    c.confirm_delivery()
    return c


def dedup_exchange(ch, scratch, kind="direct", **args):
    x = scratch.exchange("dx")
    ch.exchange_declare(x, kind, arguments={**ON, **args})
    qn = scratch.queue("dq")
    ch.queue_declare(qn)
    ch.queue_bind(qn, x, "rk")
    return x, qn


def test_exchange_routes_a_key_once(ch, scratch):
    x, qn = dedup_exchange(ch, scratch)
    for key in ("a", "a", "b", None, None):
        # not mandatory: a duplicate is still confirmed (acked), never left unanswered
        ch.basic_publish(x, "rk", b"m-%s" % (key or "none").encode(), hdr(key))
    got = [b for _, _, b in get_n(ch, qn, 4)]
    assert got == [b"m-a", b"m-b", b"m-none", b"m-none"]
    assert ready_count(ch, qn) == 0


def test_exchange_duplicate_with_mandatory_is_returned(ch, scratch):
    x, qn = dedup_exchange(ch, scratch, **{"x-deduplication-header": "msg-id"})
    p = pika.BasicProperties(headers={"msg-id": 42})
    ch.basic_publish(x, "rk", b"1", p, mandatory=True)
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "rk", b"2", p, mandatory=True)
    # the default header means nothing to this exchange
    assert routed(ch, x, "rk", "42") and routed(ch, x, "rk", "42")
    assert [b for _, _, b in get_n(ch, qn, 3)] == [b"1", b"m", b"m"]


def test_queue_dedup_drops_only_in_that_queue(ch, scratch):
    x = scratch.exchange("fx")
    ch.exchange_declare(x, "fanout")
    plain, dd = scratch.queue("plain"), scratch.queue("dd")
    ch.queue_declare(plain)
    ch.queue_declare(dd, arguments=ON)
    ch.queue_bind(plain, x)
    ch.queue_bind(dd, x)
    for key in ("k", "k", "j"):
        assert routed(ch, x, "", key)
    assert len(get_n(ch, plain, 3)) == 3
    assert [p.headers["x-deduplication-header"] for _, p, _ in get_n(ch, dd, 2)] == ["k", "j"]
    assert ready_count(ch, dd) == 0


def test_queue_duplicate_with_no_other_queue_is_returned(ch, scratch):
    qn = scratch.queue("dd")
    ch.queue_declare(qn, arguments=ON)
    assert routed(ch, "", qn, "k")
    assert not routed(ch, "", qn, "k")
    # without mandatory it is acked and dropped
    ch.basic_publish("", qn, b"again", hdr("k"))
    assert len(get_n(ch, qn, 1)) == 1
    assert ready_count(ch, qn) == 0


def test_ttl_expiry_lets_a_key_through_again(ch, scratch):
    x, qn = dedup_exchange(ch, scratch, **{"x-cache-ttl": 300})
    start = time.monotonic()
    assert routed(ch, x, "rk", "t")
    assert not routed(ch, x, "rk", "t")
    deadline = time.monotonic() + 10
    while not routed(ch, x, "rk", "t"):
        assert time.monotonic() < deadline, "the key never expired"
        ch.connection.process_data_events(time_limit=0.02)
    assert time.monotonic() - start >= 0.29
    # inserted again: a duplicate once more
    assert not routed(ch, x, "rk", "t")


def test_a_message_x_cache_ttl_header_overrides(ch, scratch):
    x, qn = dedup_exchange(ch, scratch)  # no TTL: keys are kept until evicted
    assert routed(ch, x, "rk", "forever")
    assert routed(ch, x, "rk", "short", **{"x-cache-ttl": 100})
    assert not routed(ch, x, "rk", "forever")
    deadline = time.monotonic() + 10
    while not routed(ch, x, "rk", "short"):
        assert time.monotonic() < deadline, "the message's x-cache-ttl was not applied"
        ch.connection.process_data_events(time_limit=0.02)
    assert not routed(ch, x, "rk", "forever")


def test_cache_size_evicts_the_oldest(ch, scratch):
    qn = scratch.queue("dd")
    ch.queue_declare(qn, arguments={**ON, "x-cache-size": 2})
    for key in ("a", "b", "c"):
        assert routed(ch, "", qn, key)
    assert not routed(ch, "", qn, "c")
    assert not routed(ch, "", qn, "b")
    assert routed(ch, "", qn, "a")  # evicted by "c"; now "b" is the oldest
    assert routed(ch, "", qn, "b")
    assert len(get_n(ch, qn, 5)) == 5


@pytest.mark.parametrize("args,text", [
    ({"x-message-deduplication": 1}, "invalid arg 'x-message-deduplication'"),
    ({**ON, "x-cache-size": "big"}, "invalid arg 'x-cache-size'"),
    ({**ON, "x-cache-size": 0}, "{value_zero,0}"),
    ({**ON, "x-cache-size": 2_000_000}, "{max_value_exceeded,2000000}"),
    ({**ON, "x-cache-ttl": -1}, "{value_negative,-1}"),
    ({**ON, "x-deduplication-header": 7}, "invalid arg 'x-deduplication-header'"),
])
def test_bad_arguments_are_refused(conn, scratch, args, text):
    for kind in ("exchange", "queue"):
        c = conn.channel()
        name = scratch.exchange() if kind == "exchange" else scratch.queue()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            if kind == "exchange":
                c.exchange_declare(name, "direct", arguments=args)
            else:
                c.queue_declare(name, arguments=args)
        assert e.value.reply_code == 406
        assert text in e.value.reply_text, e.value.reply_text
        assert f"for {kind} '{name}'" in e.value.reply_text


@pytest.mark.parametrize("qtype,name", [("quorum", "rabbit_quorum_queue"), ("stream", "rabbit_stream_queue")])
def test_quorum_queues_and_streams_refuse_it(conn, scratch, qtype, name):
    c = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        c.queue_declare(scratch.queue(), durable=True, arguments={**ON, "x-queue-type": qtype})
    assert e.value.reply_code == 406
    assert f"of queue type {name}" in e.value.reply_text
    assert "x-message-deduplication" in e.value.reply_text


def test_api_counts_duplicates(ch, scratch, http_url):
    api = Api(http_url)
    x, qn = dedup_exchange(ch, scratch)
    dq = scratch.queue("dd")
    ch.queue_declare(dq, arguments=ON)
    for _ in range(3):
        routed(ch, x, "rk", "same")
        routed(ch, "", dq, "same")
    xs = api.json(f"/api/exchanges/%2F/{q(x)}")
    assert xs["message_stats"]["dedup"] == 2
    assert api.json(f"/api/queues/%2F/{q(dq)}")["message_stats"]["dedup"] == 2
    # an exchange or queue without deduplication has no such count
    assert "dedup" not in api.json(f"/api/queues/%2F/{q(qn)}")["message_stats"]
    metrics = api.call("GET", "/metrics", auth=False).body.decode()
    assert f'broker_queue_deduplicated_total{{vhost="/",queue="{dq}"}} 2' in metrics


def durable_dedup_queue(port, qn):
    c = connect(port)
    c.channel().queue_declare(qn, durable=True, arguments={**ON, "x-cache-ttl": 600_000})
    c.close()


def persistent_routed(ch, qn, key):
    try:
        ch.basic_publish("", qn, b"p", pika.BasicProperties(delivery_mode=2, headers={
            "x-deduplication-header": key}), mandatory=True)
        return True
    except pika.exceptions.UnroutableError:
        return False


@pytest.mark.parametrize("stop", ["restart", "kill9"])
def test_durable_queue_cache_survives(own_broker_factory, stop):
    b = own_broker_factory()
    qn = uniq("durable-dd")
    durable_dedup_queue(b.port, qn)
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    assert persistent_routed(ch, qn, "k1")
    # consumed: the key must come back from the cache's own store, not the message
    assert len(get_n(ch, qn, 1)) == 1
    assert persistent_routed(ch, qn, "k2")  # confirmed: its key is durable now
    if stop == "kill9":
        b.proc.kill()
        b.proc.wait(timeout=10)
        b._launch()
    else:
        c.close()
        b.restart()
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    assert not persistent_routed(ch, qn, "k1")
    assert not persistent_routed(ch, qn, "k2")
    assert persistent_routed(ch, qn, "k3")
    keys = [p.headers["x-deduplication-header"] for _, p, _ in get_n(ch, qn, 3, timeout=1)]
    # k2 stored, k3 new; after a kill -9 k1 may be back too (its ack was within the
    # last index flush: at-least-once), but no key is there twice
    assert sorted(set(keys)) == sorted(keys) and {"k2", "k3"} <= set(keys), keys
    assert stop == "kill9" or sorted(keys) == ["k2", "k3"]
    # deleting the queue deletes its cache: a new queue of the name starts empty
    ch.queue_delete(qn)
    ch.queue_declare(qn, durable=True, arguments=ON)
    assert persistent_routed(ch, qn, "k1")
    c.close()
    b.restart()
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    assert not persistent_routed(ch, qn, "k1")
    assert persistent_routed(ch, qn, "k2")
    c.close()


def test_transient_queue_and_exchange_caches_are_in_memory(own_broker_factory):
    b = own_broker_factory()
    qn, x = uniq("tq"), uniq("tx")
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare(qn, arguments=ON)
    ch.exchange_declare(x, "fanout", durable=True, arguments=ON)
    dq = uniq("dq")
    ch.queue_declare(dq, durable=True)
    ch.queue_bind(dq, x)
    assert routed(ch, "", qn, "k") and routed(ch, x, "", "k")
    assert not routed(ch, x, "", "k")
    c.close()
    b.restart()
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    # the durable exchange is back with an empty cache, as in LavinMQ
    assert routed(ch, x, "", "k")
    c.close()


def test_api_publish_is_deduplicated_too(ch, scratch, http_url):
    api = Api(http_url)
    x, qn = dedup_exchange(ch, scratch)
    dq = scratch.queue("dd")
    ch.queue_declare(dq, arguments=ON)
    body = {"routing_key": "rk", "payload": "p", "payload_encoding": "string",
            "properties": {"headers": {"x-deduplication-header": "api-1"}}}
    pub = f"/api/exchanges/%2F/{q(x)}/publish"
    assert api.post(pub, body).json() == {"routed": True}
    assert api.post(pub, body).json() == {"routed": False}
    pub = "/api/exchanges/%2F/amq.default/publish"
    assert api.post(pub, {**body, "routing_key": dq}).json() == {"routed": True}
    assert api.post(pub, {**body, "routing_key": dq}).json() == {"routed": False}
    assert ready_count(ch, qn) == 1 and ready_count(ch, dq) == 1
