"""The `x-delayed-message` exchange (the API of RabbitMQ's delayed-message plugin, built
in as LavinMQ has it): `x-delayed-type` names the routing type, a message with an
`x-delay` header > 0 waits that many ms and is then routed with its routing key and
headers (`x-delay` negated, as the plugin does). Beyond the plugin, persistent messages
of a durable delayed exchange are stored: they survive a restart and a kill -9 with
their due times, and the API shows how many wait and when the next is due.
"""
import time

import pika
import pytest

from conftest import connect, get_n, ready_count, uniq
from httpapi import Api, q

pytestmark = pytest.mark.ours_only

TYPE_ERROR = "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type"


def delayed(ms=None, persistent=False, **headers):
    h = dict(headers)
    if ms is not None:
        h["x-delay"] = ms
    return pika.BasicProperties(headers=h, delivery_mode=2 if persistent else None)


def setup(ch, scratch, kind="direct", key="k", durable=False, **args):
    x = scratch.exchange("dlx")
    ch.exchange_declare(x, "x-delayed-message", durable=durable, arguments={"x-delayed-type": kind, **args})
    qn = scratch.queue("dq")
    ch.queue_declare(qn, durable=durable)
    ch.queue_bind(qn, x, key)
    return x, qn


def consume_timed(conn, ch, qn, n, timeout=10.0):
    """Consumes n messages; returns [(monotonic time of arrival, props, body)]."""
    got = []
    ch.basic_consume(qn, lambda c, m, p, b: got.append((time.monotonic(), p, b)), auto_ack=True)
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.01)
    return got


@pytest.fixture
def ch(conn):
    c = conn.channel()
    c.confirm_delivery()
    return c


def test_a_delayed_message_waits_then_routes_with_its_delay_negated(conn, ch, scratch):
    x, qn = setup(ch, scratch)
    start = time.monotonic()
    ch.basic_publish(x, "k", b"later", delayed(400, other="kept"))
    assert ready_count(ch, qn) == 0
    got = consume_timed(conn, ch, qn, 1)
    assert [b for _, _, b in got] == [b"later"]
    at, props, _ = got[0]
    assert at - start >= 0.39, at - start
    assert at - start < 3.0, at - start
    assert props.headers["other"] == "kept"
    # the plugin negates x-delay (pika reads RabbitMQ's signed 64-bit 'l' as unsigned)
    assert props.headers["x-delay"] in (-400, 2**64 - 400)


def test_messages_leave_by_due_time_not_by_arrival(conn, ch, scratch):
    x, qn = setup(ch, scratch)
    for body, ms in ((b"c", 900), (b"a", 300), (b"now", None), (b"b", 600), (b"zero", 0), (b"neg", -5)):
        ch.basic_publish(x, "k", body, delayed(ms))
    got = [b for _, _, b in consume_timed(conn, ch, qn, 6)]
    # no header, 0 and negative delays route at once, in publish order
    assert got == [b"now", b"zero", b"neg", b"a", b"b", b"c"]


def test_routes_by_its_delayed_type(conn, ch, scratch):
    x, qn = setup(ch, scratch, kind="topic", key="orders.*")
    other = scratch.queue("other")
    ch.queue_declare(other)
    ch.queue_bind(other, x, "#.eu")
    ch.basic_publish(x, "orders.eu", b"both", delayed(200))
    ch.basic_publish(x, "users.eu", b"other-only", delayed(200))
    ch.basic_publish(x, "nowhere", b"dropped", delayed(100))
    assert [b for _, _, b in get_n(ch, qn, 1, timeout=5)] == [b"both"]
    assert sorted(b for _, _, b in get_n(ch, other, 2, timeout=5)) == [b"both", b"other-only"]
    assert ready_count(ch, qn) == 0 and ready_count(ch, other) == 0


def test_headers_type_routes_on_the_headers(ch, scratch):
    x, qn = setup(ch, scratch, kind="headers", key="")
    ch.queue_unbind(qn, x, "")
    ch.queue_bind(qn, x, "", arguments={"x-match": "all", "region": "eu"})
    ch.basic_publish(x, "", b"eu", delayed(150, region="eu"))
    ch.basic_publish(x, "", b"us", delayed(150, region="us"))
    assert [b for _, _, b in get_n(ch, qn, 2, timeout=3)] == [b"eu"]


def test_a_bad_binding_of_the_delayed_type_is_refused(conn, scratch):
    ch = conn.channel()
    x = scratch.exchange("dlx")
    ch.exchange_declare(x, "x-delayed-message", arguments={"x-delayed-type": "headers"})
    qn = scratch.queue("dq")
    ch.queue_declare(qn)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_bind(qn, x, "", arguments={"x-match": "some"})
    assert e.value.reply_code == 406


def test_mandatory_is_never_returned_for_a_delayed_message(ch, scratch):
    x, qn = setup(ch, scratch)
    # delayed: not returned (the plugin cannot know its routes yet), even to no queue
    ch.basic_publish(x, "unbound", b"d", delayed(50), mandatory=True)
    # not delayed: routed at once, so an unroutable one is returned
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(x, "unbound", b"now", delayed(None), mandatory=True)


@pytest.mark.parametrize(
    "args",
    [{}, {"x-delayed-type": "nope"}, {"x-delayed-type": "x-delayed-message"}, {"x-delayed-type": 5}],
)
def test_the_delayed_type_must_name_an_existing_type(conn, scratch, args):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.exchange_declare(scratch.exchange("bad"), "x-delayed-message", arguments=args)
    assert e.value.reply_code == 406
    assert e.value.reply_text == TYPE_ERROR


def test_api_shows_waiting_messages_and_next_due(ch, scratch, http_url):
    api = Api(http_url)
    x, qn = setup(ch, scratch)
    before_ms = time.time() * 1000
    ch.basic_publish(x, "k", b"1", delayed(60_000))
    ch.basic_publish(x, "k", b"2", delayed(30_000))
    deadline = time.monotonic() + 5
    while True:
        j = api.json(f"/api/exchanges/%2F/{q(x)}")
        if j.get("messages_delayed") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert j["type"] == "x-delayed-message"
    assert j["arguments"] == {"x-delayed-type": "direct"}
    assert j["messages_delayed"] == 2
    assert before_ms + 29_000 <= j["next_due"] <= time.time() * 1000 + 30_000
    types = {t["name"]: t["description"] for t in api.json("/api/overview")["exchange_types"]}
    assert types["x-delayed-message"] == "Delayed Message Exchange"
    listed = [e for e in api.json("/api/exchanges/%2F") if e["name"] == x]
    assert listed[0]["messages_delayed"] == 2
    metrics = api.get("/metrics").body.decode()
    assert f'broker_exchange_messages_delayed{{vhost="/",exchange="{x}"}} 2' in metrics
    # the waiting room is no queue a client can see
    assert not [e for e in api.json("/api/queues/%2F") if e["name"].startswith("amq.delayed")]
    # deleting the exchange drops what waits
    ch.exchange_delete(x)
    assert ready_count(ch, qn) == 0


def test_api_publish_is_delayed_too(conn, ch, scratch, http_url):
    api = Api(http_url)
    x, qn = setup(ch, scratch)
    r = api.post(
        f"/api/exchanges/%2F/{q(x)}/publish",
        {"routing_key": "k", "payload": "via-api", "payload_encoding": "string",
         "properties": {"headers": {"x-delay": 300}}},
    )
    assert r.status == 200, r
    # routed: the waiting room counts as a route
    assert r.json()["routed"] is True
    assert ready_count(ch, qn) == 0
    assert [b for _, _, b in consume_timed(conn, ch, qn, 1)] == [b"via-api"]


def test_a_dead_letter_with_x_delay_waits_in_its_delayed_exchange(conn, ch, scratch):
    x, target = setup(ch, scratch)
    source = scratch.queue("src")
    ch.queue_declare(source, arguments={"x-dead-letter-exchange": x, "x-dead-letter-routing-key": "k"})
    ch.basic_publish("", source, b"dl", delayed(400))
    m, _, _ = ch.basic_get(source)
    start = time.monotonic()
    ch.basic_reject(m.delivery_tag, requeue=False)
    got = consume_timed(conn, ch, target, 1)
    assert [b for _, _, b in got] == [b"dl"]
    assert got[0][0] - start >= 0.35


def durable_setup(port):
    c = connect(port)
    ch = c.channel()
    ch.confirm_delivery()
    x, qn = uniq("ddx"), uniq("ddq")
    ch.exchange_declare(x, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_declare(qn, durable=True)
    ch.queue_bind(qn, x, "k")
    return c, ch, x, qn


@pytest.mark.parametrize("stop", ["restart", "kill9"])
def test_durable_delayed_messages_survive_with_their_due_times(own_broker_factory, stop):
    b = own_broker_factory()
    c, ch, x, qn = durable_setup(b.port)
    published = time.monotonic()
    # confirmed (after the fsync): these must not be lost
    ch.basic_publish(x, "k", b"soon", delayed(2500, persistent=True))
    ch.basic_publish(x, "k", b"later", delayed(5000, persistent=True))
    ch.basic_publish(x, "k", b"transient", delayed(2500))
    if stop == "kill9":
        b.proc.kill()
        b.proc.wait(timeout=10)
        b._launch()
    else:
        c.close()
        b.restart()
    c = connect(b.port)
    ch = c.channel()
    got = consume_timed(c, ch, qn, 2, timeout=15)
    assert [body for _, _, body in got] == [b"soon", b"later"]
    # the delay counts from the publish, not from the restart
    assert got[0][0] - published >= 2.4
    assert got[1][0] - published >= 4.9
    assert got[1][0] - published < 12
    # nothing else arrives: the transient one is gone, and none comes twice
    c.process_data_events(time_limit=0.5)
    assert ready_count(ch, qn) == 0
    c.close()


def test_a_message_due_while_the_broker_was_down_is_routed_at_start(own_broker_factory):
    b = own_broker_factory()
    c, ch, x, qn = durable_setup(b.port)
    ch.basic_publish(x, "k", b"overdue", delayed(300, persistent=True))
    c.close()
    b.terminate()
    time.sleep(0.5)  # the broker is down while the message falls due
    b._launch()
    c = connect(b.port)
    ch = c.channel()
    assert [body for _, _, body in get_n(ch, qn, 1, timeout=5)] == [b"overdue"]
    c.close()


def test_deleted_durable_exchange_leaves_nothing_after_restart(own_broker_factory):
    b = own_broker_factory()
    c, ch, x, qn = durable_setup(b.port)
    ch.basic_publish(x, "k", b"never", delayed(1500, persistent=True))
    ch.exchange_delete(x)
    # a new exchange of the name starts empty
    ch.exchange_declare(x, "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"})
    ch.queue_bind(qn, x, "k")
    c.close()
    b.restart()
    c = connect(b.port)
    ch = c.channel()
    c.process_data_events(time_limit=2.5)
    assert ready_count(ch, qn) == 0
    api = Api(b.http_url)
    assert api.json(f"/api/exchanges/%2F/{q(x)}")["messages_delayed"] == 0
    c.close()
