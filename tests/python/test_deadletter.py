"""Dead-lettering (x-dead-letter-exchange / x-dead-letter-routing-key) for every reason,
with the x-death and x-first-death-* headers exactly as RabbitMQ 3.10 writes them, cycle
detection, and (ours_only) our broker's amq.dead-letter exchange, x-delivery-limit on
classic queues, x-last-death-* headers, consumer timeout and dead letters across a restart.

x-death is a list of tables, newest first, one per (queue, reason):
  count (long 'l'), reason, queue, time (timestamp 'T', seconds), exchange (the exchange
  the message had been published to when it died in that queue), routing-keys (array of
  longstr: the routing key, then the CC keys), original-expiration (longstr, only if the
  message had an expiration property, which is removed from the dead-lettered copy).
Dead-lettering the same message again from the same queue for the same reason increments
that entry's count and moves it to the front; its time stays that of the first death.
"""
import datetime
import time

import pika
import pika.data
import pytest
from pika.compat import long
from pika.exceptions import ChannelClosedByBroker, NackError

from conftest import connect, get_n, pump_until, ready_count, round_trip, uniq

VHOST = "vhost '/'"
INT_KINDS = (b"b", b"B", b"s", b"u", b"i", b"I", b"l", b"L")


class WireInt(int):
    """An int decoded from a field table, remembering its AMQP type tag."""

    kind = None

    def __repr__(self):
        return f"{int(self)}<{self.kind.decode()}>"


@pytest.fixture(autouse=True)
def wire_ints(monkeypatch):
    """Decodes integer field-table values as WireInt so tests can check the type tag
    (pika alone decodes 'I' and 'l' to the same int)."""
    orig = pika.data.decode_value

    def decode_value(encoded, offset):
        kind = encoded[offset:offset + 1]
        value, end = orig(encoded, offset)
        if kind in INT_KINDS:
            value = WireInt(value)
            value.kind = kind
        return value, end

    monkeypatch.setattr(pika.data, "decode_value", decode_value)


# --------------------------------------------------------------------------- helpers


def sync(ch):
    ch.basic_qos(prefetch_count=0)


def pause(conn, seconds):
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.process_data_events(time_limit=min(left, 0.05))


def drain(ch, q):
    out = []
    while True:
        m, p, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append((m, p, body))


def one(ch, q, timeout=2.0):
    """Exactly one message arrives in q (within timeout) and nothing after it."""
    got = get_n(ch, q, 1, timeout=timeout)
    assert len(got) == 1, f"nothing arrived in {q}"
    assert ch.basic_get(q) == (None, None, None), f"more than one message in {q}"
    return got[0]


def nothing_in(conn, ch, q, wait=0.3):
    pause(conn, wait)
    assert ch.basic_get(q) == (None, None, None), f"unexpected message in {q}"


def check_death(entry, *, queue, reason, exchange, routing_keys, count=1, original_expiration=None):
    """One x-death table, exactly: its keys, values and field types."""
    keys = {"count", "reason", "queue", "time", "exchange", "routing-keys"}
    if original_expiration is not None:
        keys.add("original-expiration")
    assert set(entry) == keys, entry
    assert entry["count"] == count and entry["count"].kind == b"l", entry["count"]
    got = {k: entry[k] for k in keys - {"count", "time"}}
    want = {"queue": queue, "reason": reason, "exchange": exchange, "routing-keys": routing_keys}
    if original_expiration is not None:
        want["original-expiration"] = original_expiration
    assert got == want
    for k in keys - {"count", "time", "routing-keys"}:
        assert type(entry[k]) is str, (k, entry[k])  # longstr, not binary
    assert all(type(k) is str for k in entry["routing-keys"]), entry["routing-keys"]
    t = entry["time"]
    assert isinstance(t, datetime.datetime), t  # a timestamp, seconds since the epoch
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - t).total_seconds()) < 60, t


def check_first_death(headers, *, queue, reason, exchange):
    got = {k: headers[k] for k in ("x-first-death-exchange", "x-first-death-queue", "x-first-death-reason")}
    assert got == {"x-first-death-exchange": exchange, "x-first-death-queue": queue, "x-first-death-reason": reason}
    assert all(type(v) is str for v in got.values())


def without_last_death(headers):
    """The headers without x-last-death-* (RabbitMQ 3.13 added those; 3.10 has none; our
    broker sends them, see test_last_death_headers)."""
    return {k: v for k, v in headers.items() if not k.startswith("x-last-death-")}


class DL:
    """A source exchange `x` (direct) and, as its dead-letter target, a fanout DLX `dlx`
    with a queue `dlq` bound to it."""

    def __init__(self, conn, scratch, dlx_type="fanout"):
        self.conn = conn
        self.ch = conn.channel()
        self.x = scratch.exchange("src-x")
        self.dlx = scratch.exchange("dlx")
        self.dlq = uniq("dlq")
        self.ch.exchange_declare(self.x, "direct")
        self.ch.exchange_declare(self.dlx, dlx_type)
        self.ch.queue_declare(self.dlq, exclusive=True)
        if dlx_type == "fanout":
            self.ch.queue_bind(self.dlq, self.dlx)

    def source(self, rk="rk", prefix="src", **args):
        q = uniq(prefix)
        arguments = {"x-dead-letter-exchange": self.dlx}
        arguments.update(args)
        self.ch.queue_declare(q, exclusive=True, arguments=arguments)
        self.ch.queue_bind(q, self.x, rk)
        return q


# =========================================================================== rejected


@pytest.mark.parametrize("how", ["reject", "nack", "consumer-reject"])
def test_rejected_message_is_dead_lettered(conn, scratch, how):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.basic_publish(dl.x, "rk", b"bad", pika.BasicProperties(message_id="m1"))
    if how == "consumer-reject":
        got = []
        ch.basic_consume(src, lambda c, m, p, b: got.append(m), consumer_tag="c")
        assert pump_until(conn, lambda: len(got) == 1)
        ch.basic_reject(got[0].delivery_tag, requeue=False)
    else:
        (m, _, _), = get_n(ch, src, 1, auto_ack=False)
        if how == "reject":
            ch.basic_reject(m.delivery_tag, requeue=False)
        else:
            ch.basic_nack(m.delivery_tag, requeue=False)
    m, p, body = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key, m.redelivered, body, p.message_id) == (dl.dlx, "rk", False, b"bad", "m1")
    assert set(without_last_death(p.headers)) == {
        "x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason"}
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="rejected", exchange=dl.x, routing_keys=["rk"])
    check_first_death(p.headers, queue=src, reason="rejected", exchange=dl.x)
    assert p.expiration is None
    # gone from the source queue
    assert ch.basic_get(src) == (None, None, None)


def test_nack_multiple_dead_letters_all_in_order(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    for i in range(4):
        ch.basic_publish(dl.x, "rk", f"m{i}".encode())
    got = get_n(ch, src, 4, auto_ack=False)
    ch.basic_nack(got[2][0].delivery_tag, multiple=True, requeue=False)  # m0..m2
    dead = get_n(ch, dl.dlq, 3)
    assert [b for _, _, b in dead] == [b"m0", b"m1", b"m2"]
    for _, p, _ in dead:
        (death,) = p.headers["x-death"]
        check_death(death, queue=src, reason="rejected", exchange=dl.x, routing_keys=["rk"])
    nothing_in(conn, ch, dl.dlq, wait=0.1)
    ch.basic_nack(got[3][0].delivery_tag, requeue=True)
    (m, _, body), = get_n(ch, src, 1)
    assert (m.redelivered, body) == (True, b"m3")


@pytest.mark.parametrize("how", ["reject requeue", "nack requeue", "recover", "channel close", "cancel+close"])
def test_requeue_does_not_dead_letter(conn, scratch, how):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.basic_publish(dl.x, "rk", b"m")
    taker = conn.channel()
    (m, _, _), = get_n(taker, src, 1, auto_ack=False)
    if how == "reject requeue":
        taker.basic_reject(m.delivery_tag, requeue=True)
    elif how == "nack requeue":
        taker.basic_nack(m.delivery_tag, requeue=True)
    elif how == "recover":
        taker.basic_recover(requeue=True)
    else:
        taker.close()
    (m, p, body), = get_n(ch, src, 1)
    assert (m.redelivered, body, p.headers) == (True, b"m", None)
    nothing_in(conn, ch, dl.dlq, wait=0.1)


def test_auto_ack_and_ack_do_not_dead_letter(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.basic_publish(dl.x, "rk", b"a")
    ch.basic_publish(dl.x, "rk", b"b")
    get_n(ch, src, 1, auto_ack=True)
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_ack(m.delivery_tag)
    nothing_in(conn, ch, dl.dlq, wait=0.1)


def test_purge_and_delete_do_not_dead_letter(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish(dl.x, "rk", b"m")
    assert ch.queue_purge(src).method.message_count == 3
    ch.basic_publish(dl.x, "rk", b"n")
    assert ch.queue_delete(src).method.message_count == 1
    nothing_in(conn, ch, dl.dlq, wait=0.2)


# =========================================================================== expired


def test_expired_by_queue_ttl_is_dead_lettered(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-message-ttl": 100})
    ch.basic_publish(dl.x, "rk", b"late", pika.BasicProperties(content_type="text/plain"))
    m, p, body = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key, body, p.content_type) == (dl.dlx, "rk", b"late", "text/plain")
    (death,) = p.headers["x-death"]
    # no original-expiration: the message had no expiration property
    check_death(death, queue=src, reason="expired", exchange=dl.x, routing_keys=["rk"])
    check_first_death(p.headers, queue=src, reason="expired", exchange=dl.x)
    assert p.expiration is None


def test_expired_by_message_expiration_is_dead_lettered(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.basic_publish(dl.x, "rk", b"short", pika.BasicProperties(expiration="100"))
    m, p, body = one(ch, dl.dlq)
    assert body == b"short"
    # the dead-lettered copy has no expiration (it would expire again in the DLQ);
    # the value is kept in x-death as original-expiration
    assert p.expiration is None
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="expired", exchange=dl.x, routing_keys=["rk"], original_expiration="100")
    check_first_death(p.headers, queue=src, reason="expired", exchange=dl.x)


def test_expired_by_queue_ttl_keeps_longer_message_expiration_in_x_death(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-message-ttl": 100})
    ch.basic_publish(dl.x, "rk", b"m", pika.BasicProperties(expiration="60000"))
    _, p, _ = one(ch, dl.dlq)
    assert p.expiration is None
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="expired", exchange=dl.x, routing_keys=["rk"], original_expiration="60000")


def test_rejected_message_with_expiration_gets_original_expiration(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    ch.basic_publish(dl.x, "rk", b"m", pika.BasicProperties(expiration="60000"))
    (m, p, _), = get_n(ch, src, 1, auto_ack=False)
    assert p.expiration == "60000"
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, p, _ = one(ch, dl.dlq)
    assert p.expiration is None
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="rejected", exchange=dl.x, routing_keys=["rk"], original_expiration="60000")


def test_expired_messages_dead_lettered_in_order(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-message-ttl": 150})
    for i in range(5):
        ch.basic_publish(dl.x, "rk", f"m{i}".encode())
    dead = get_n(ch, dl.dlq, 5, timeout=2.0)
    assert [b for _, _, b in dead] == [f"m{i}".encode() for i in range(5)]
    assert ready_count(ch, src) == 0


def test_unacked_message_does_not_expire_until_returned(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-message-ttl": 100})
    ch.basic_publish(dl.x, "rk", b"held")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    nothing_in(conn, ch, dl.dlq, wait=0.3)
    ch.basic_nack(m.delivery_tag, requeue=True)  # back in the queue, already expired
    _, p, body = one(ch, dl.dlq)
    assert body == b"held"
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="expired", exchange=dl.x, routing_keys=["rk"])


# =========================================================================== maxlen


def test_max_length_drop_head_dead_letters_oldest(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-max-length": 2})
    for i in range(5):
        ch.basic_publish(dl.x, "rk", f"m{i}".encode())
    dead = get_n(ch, dl.dlq, 3)
    assert [b for _, _, b in dead] == [b"m0", b"m1", b"m2"]
    for _, p, _ in dead:
        (death,) = p.headers["x-death"]
        check_death(death, queue=src, reason="maxlen", exchange=dl.x, routing_keys=["rk"])
        check_first_death(p.headers, queue=src, reason="maxlen", exchange=dl.x)
    assert [b for _, _, b in drain(ch, src)] == [b"m3", b"m4"]


def test_max_length_bytes_dead_letters_oldest(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-max-length-bytes": 6})
    for b in (b"aaa", b"bbb", b"ccc"):
        ch.basic_publish(dl.x, "rk", b)
    _, p, body = one(ch, dl.dlq)
    assert body == b"aaa"
    check_death(p.headers["x-death"][0], queue=src, reason="maxlen", exchange=dl.x, routing_keys=["rk"])


def test_reject_publish_dlx_nacks_and_dead_letters(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    ch.confirm_delivery()
    ch.basic_publish(dl.x, "rk", b"kept")
    with pytest.raises(NackError):
        ch.basic_publish(dl.x, "rk", b"refused", pika.BasicProperties(correlation_id="c2"))
    m, p, body = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key, body, p.correlation_id) == (dl.dlx, "rk", b"refused", "c2")
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="maxlen", exchange=dl.x, routing_keys=["rk"])
    check_first_death(p.headers, queue=src, reason="maxlen", exchange=dl.x)
    assert [b for _, _, b in drain(ch, src)] == [b"kept"]


def test_reject_publish_does_not_dead_letter(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk", **{"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    ch.basic_publish(dl.x, "rk", b"kept")
    with pytest.raises(NackError):
        ch.basic_publish(dl.x, "rk", b"refused")
    nothing_in(conn, ch, dl.dlq, wait=0.2)
    assert [b for _, _, b in drain(ch, src)] == [b"kept"]


# =========================================================================== routing keys


def test_dead_letter_routing_key_replaces_routing_key(conn, scratch):
    dl = DL(conn, scratch, dlx_type="direct")
    ch = dl.ch
    ch.queue_bind(dl.dlq, dl.dlx, "dead")
    wrong = uniq("wrong")
    ch.queue_declare(wrong, exclusive=True)
    ch.queue_bind(wrong, dl.dlx, "orig")
    src = dl.source("orig", **{"x-dead-letter-routing-key": "dead"})
    ch.basic_publish(dl.x, "orig", b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key) == (dl.dlx, "dead")
    # x-death records the routing keys the message was published with
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange=dl.x, routing_keys=["orig"])
    nothing_in(conn, ch, wrong, wait=0.05)


def test_dead_letter_routing_key_of_255_bytes_reaches_the_client(conn, scratch):
    """The longest routing key a shortstr holds is carried to the dead-letter queue and
    fetched intact (basic.get-ok carries it)."""
    dl = DL(conn, scratch)
    ch = dl.ch
    key = "k" * 255
    src = dl.source("orig", **{"x-dead-letter-routing-key": key})
    ch.basic_publish(dl.x, "orig", b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, _, body = one(ch, dl.dlq)
    assert (m.routing_key, body) == (key, b"m")


@pytest.mark.ours_only
def test_406_dead_letter_routing_key_longer_than_a_shortstr(conn, scratch):
    """A dead letter carries x-dead-letter-routing-key as its routing key, a shortstr on
    the wire. RabbitMQ 3.10 accepts a longer one and then closes the connection of every
    client that is delivered such a dead letter (541); we refuse it at declare (406), so
    no dead letter can be undeliverable (before, basic.get on the DLQ hung forever)."""
    dl = DL(conn, scratch)
    q = uniq("src")
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q, arguments={"x-dead-letter-exchange": dl.dlx, "x-dead-letter-routing-key": "k" * 300})
    assert ei.value.reply_code == 406
    assert ei.value.reply_text == (
        f"PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue '{q}' in {VHOST}: "
        '"300 bytes, longer than a routing key can be (255)"')
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404


def test_without_dead_letter_routing_key_original_routing_key_is_used(conn, scratch):
    dl = DL(conn, scratch, dlx_type="direct")
    ch = dl.ch
    ch.queue_bind(dl.dlq, dl.dlx, "orig")
    other = uniq("other")
    ch.queue_declare(other, exclusive=True)
    ch.queue_bind(other, dl.dlx, "something-else")
    src = dl.source("orig")
    ch.basic_publish(dl.x, "orig", b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, _, _ = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key) == (dl.dlx, "orig")
    nothing_in(conn, ch, other, wait=0.05)


def test_dead_letter_to_default_exchange(conn, scratch):
    ch = conn.channel()
    dlq, src = uniq("dlq"), uniq("src")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_nack(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, dlq)
    assert (m.exchange, m.routing_key) == ("", dlq)
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange="", routing_keys=[src])
    check_first_death(p.headers, queue=src, reason="rejected", exchange="")


def test_cc_keys_are_recorded_and_used_for_routing(conn, scratch):
    dl = DL(conn, scratch, dlx_type="direct")
    ch = dl.ch
    ch.queue_bind(dl.dlq, dl.dlx, "cc-key")  # only the CC key leads here
    src = dl.source("orig")
    ch.basic_publish(dl.x, "orig", b"m", pika.BasicProperties(headers={"CC": ["cc-key"]}))
    (m, p, _), = get_n(ch, src, 1, auto_ack=False)
    assert p.headers == {"CC": ["cc-key"]}
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, dl.dlq)
    assert (m.exchange, m.routing_key) == (dl.dlx, "orig")
    assert p.headers["CC"] == ["cc-key"]
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange=dl.x, routing_keys=["orig", "cc-key"])


def test_dead_letter_routing_key_drops_cc_header(conn, scratch):
    dl = DL(conn, scratch, dlx_type="direct")
    ch = dl.ch
    ch.queue_bind(dl.dlq, dl.dlx, "dead")
    cc_q = uniq("cc")
    ch.queue_declare(cc_q, exclusive=True)
    ch.queue_bind(cc_q, dl.dlx, "cc-key")
    src = dl.source("orig", **{"x-dead-letter-routing-key": "dead"})
    ch.basic_publish(dl.x, "orig", b"m", pika.BasicProperties(headers={"CC": ["cc-key"], "keep": "me"}))
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, dl.dlq)
    assert m.routing_key == "dead"
    assert "CC" not in p.headers and p.headers["keep"] == "me"
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange=dl.x, routing_keys=["orig", "cc-key"])
    nothing_in(conn, ch, cc_q, wait=0.05)


# =========================================================================== x-death accumulation


def test_same_queue_same_reason_increments_count(conn):
    # a queue dead-lettering into itself: allowed for rejections (not a cycle)
    ch = conn.channel()
    q = uniq("self")
    ch.queue_declare(q, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    ch.basic_publish("", q, b"m")
    first_time = None
    for n in range(1, 4):
        (m, p, body), = get_n(ch, q, 1, auto_ack=False)
        assert (m.redelivered, body) == (False, b"m")
        if n == 1:
            assert p.headers is None
        else:
            (death,) = p.headers["x-death"]
            check_death(death, queue=q, reason="rejected", exchange="", routing_keys=[q], count=n - 1)
            first_time = first_time or death["time"]
            assert death["time"] == first_time, "time is that of the first death"
            check_first_death(p.headers, queue=q, reason="rejected", exchange="")
        if n == 2:
            pause(conn, 1.05)  # the next death is at least a second later
        ch.basic_reject(m.delivery_tag, requeue=False)
    (m, p, _), = get_n(ch, q, 1)
    (death,) = p.headers["x-death"]
    check_death(death, queue=q, reason="rejected", exchange="", routing_keys=[q], count=3)
    assert death["time"] == first_time


def test_deaths_in_different_queues_newest_first_and_moved_to_front(conn):
    ch = conn.channel()
    a, b = uniq("ping"), uniq("pong")
    ch.queue_declare(a, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    ch.queue_declare(b, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a})
    ch.basic_publish("", a, b"ball")

    def reject_from(q):
        (m, p, _), = get_n(ch, q, 1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        return p

    reject_from(a)
    p = reject_from(b)
    assert [(d["queue"], d["count"]) for d in p.headers["x-death"]] == [(a, 1)]
    p = reject_from(a)
    assert [(d["queue"], d["count"]) for d in p.headers["x-death"]] == [(b, 1), (a, 1)]
    reject_from(b)
    (m, p, _), = get_n(ch, a, 1)
    # a's entry (count 2) was moved in front of b's, then b's (count 2) in front of a's
    da, db = p.headers["x-death"][1], p.headers["x-death"][0]
    check_death(db, queue=b, reason="rejected", exchange="", routing_keys=[b], count=2)
    check_death(da, queue=a, reason="rejected", exchange="", routing_keys=[a], count=2)
    check_first_death(p.headers, queue=a, reason="rejected", exchange="")
    assert m.routing_key == a


def test_different_reasons_add_entries_newest_first(conn, scratch):
    ch = conn.channel()
    x = scratch.exchange("orig-x")
    ch.exchange_declare(x, "direct")
    stage1, stage2, dlq = uniq("stage1"), uniq("stage2"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(stage2, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.queue_declare(stage1, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": stage2})
    ch.queue_bind(stage1, x, "k")
    ch.basic_publish(x, "k", b"m", pika.BasicProperties(expiration="60000"))
    (m, p, _), = get_n(ch, stage2, 1, timeout=2.0, auto_ack=False)
    assert (m.exchange, m.routing_key) == ("", stage2)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, dlq)
    newest, oldest = p.headers["x-death"]
    # the second death: published to "" (by dead-lettering) with routing key stage2
    check_death(newest, queue=stage2, reason="rejected", exchange="", routing_keys=[stage2])
    check_death(oldest, queue=stage1, reason="expired", exchange=x, routing_keys=["k"], original_expiration="60000")
    check_first_death(p.headers, queue=stage1, reason="expired", exchange=x)


# =========================================================================== cycles


def test_expiry_into_itself_is_dropped(conn):
    # TTL + DLX routing back into the same queue: a cycle without a rejection. RabbitMQ
    # drops the dead letter for that queue at once (the new x-death already names it).
    ch = conn.channel()
    q = uniq("cycle")
    ch.queue_declare(q, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": q})
    ch.confirm_delivery()
    ch.basic_publish("", q, b"loop")
    assert ready_count(ch, q) == 1
    assert pump_until(conn, lambda: ready_count(ch, q) == 0, timeout=1.0)
    nothing_in(conn, ch, q, wait=0.3)


def test_expiry_cycle_drops_only_for_queues_already_visited(conn, scratch):
    ch = conn.channel()
    fan = scratch.exchange("cycle-fan")
    ch.exchange_declare(fan, "fanout")
    q, observer = uniq("cycle"), uniq("observer")
    ch.queue_declare(q, exclusive=True, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": fan})
    ch.queue_declare(observer, exclusive=True)
    ch.queue_bind(q, fan)
    ch.queue_bind(observer, fan)
    ch.basic_publish("", q, b"loop")
    # the observer gets it once; q does not get it back, so it never expires again
    m, p, body = one(ch, observer)
    assert (m.exchange, body) == (fan, b"loop")
    (death,) = p.headers["x-death"]
    check_death(death, queue=q, reason="expired", exchange="", routing_keys=[q])
    nothing_in(conn, ch, observer, wait=0.4)
    assert ch.basic_get(q) == (None, None, None)


def test_two_queue_expiry_cycle(conn, scratch):
    ch = conn.channel()
    a, b, observer = uniq("cyc-a"), uniq("cyc-b"), uniq("observer")
    fan = scratch.exchange("cyc-fan")
    ch.exchange_declare(fan, "fanout")
    ch.queue_declare(observer, exclusive=True)
    ch.queue_declare(a, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    ch.queue_declare(b, exclusive=True, arguments={"x-message-ttl": 100, "x-dead-letter-exchange": fan})
    ch.queue_bind(a, fan)
    ch.queue_bind(observer, fan)
    ch.basic_publish("", a, b"loop")
    # a -> b (expired) -> fan: observer gets it, a is skipped (already in x-death, no rejection)
    m, p, _ = one(ch, observer, timeout=2.0)
    newest, oldest = p.headers["x-death"]
    check_death(newest, queue=b, reason="expired", exchange="", routing_keys=[b])
    check_death(oldest, queue=a, reason="expired", exchange="", routing_keys=[a])
    nothing_in(conn, ch, observer, wait=0.4)
    assert ch.basic_get(a) == (None, None, None) and ch.basic_get(b) == (None, None, None)


def test_cycle_with_a_rejection_is_not_dropped(conn):
    # a expires into b; b's consumer rejects it back into a: allowed (a rejection breaks the
    # "fully automatic" cycle), and then it expires from a again
    ch = conn.channel()
    a, b = uniq("cyc-a"), uniq("cyc-b")
    ch.queue_declare(a, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": b})
    ch.queue_declare(b, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": a})
    ch.basic_publish("", a, b"m")
    (m, p, _), = get_n(ch, b, 1, timeout=2.0, auto_ack=False)
    assert [(d["queue"], d["reason"]) for d in p.headers["x-death"]] == [(a, "expired")]
    ch.basic_reject(m.delivery_tag, requeue=False)  # -> a, then expires -> b again
    (m, p, _), = get_n(ch, b, 1, timeout=2.0, auto_ack=False)
    assert [(d["queue"], d["reason"], d["count"]) for d in p.headers["x-death"]] == [
        (a, "expired", 2), (b, "rejected", 1)]
    ch.basic_ack(m.delivery_tag)


# =========================================================================== properties, missing DLX


def test_properties_and_headers_survive_dead_lettering(conn, scratch):
    dl = DL(conn, scratch)
    ch = dl.ch
    src = dl.source("rk")
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", delivery_mode=2, priority=3,
        correlation_id="corr-1", reply_to="replies", message_id="msg-1", timestamp=1700000000,
        type="order.created", user_id="guest", app_id="app-1",
        headers={"zzz": "last", "aaa": 1, "nested": {"k": [1, "two"]}, "flag": True})
    ch.basic_publish(dl.x, "rk", b"\x00payload\xff", props)
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, p, body = one(ch, dl.dlq)
    assert body == b"\x00payload\xff"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                  "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(p, field) == getattr(props, field), field
    h = without_last_death(p.headers)
    assert set(h) == {"zzz", "aaa", "nested", "flag", "x-death", "x-first-death-exchange",
                      "x-first-death-queue", "x-first-death-reason"}
    assert (h["zzz"], h["aaa"], h["nested"], h["flag"]) == ("last", 1, {"k": [1, "two"]}, True)
    assert h["aaa"].kind == b"I"  # user headers keep their types


def test_missing_dead_letter_exchange_drops_silently(conn):
    ch = conn.channel()
    src = uniq("src")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": uniq("never-declared")})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    sync(ch)
    assert ch.is_open
    assert ch.basic_get(src) == (None, None, None)
    round_trip(ch)


def test_dead_letter_exchange_declared_later_is_used(conn, scratch):
    ch = conn.channel()
    dlx = scratch.exchange("late-dlx")
    src, dlq = uniq("src"), uniq("dlq")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", src, b"before")
    ch.basic_publish("", src, b"after")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)  # dlx does not exist yet: dropped
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_bind(dlq, dlx)
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, _, body = one(ch, dlq)
    assert body == b"after"


def test_dead_letter_exchange_without_bindings_drops(conn, scratch):
    ch = conn.channel()
    dlx = scratch.exchange("empty-dlx")
    ch.exchange_declare(dlx, "fanout")
    src = uniq("src")
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx, "x-max-length": 1})
    for i in range(3):
        ch.basic_publish("", src, f"m{i}".encode())
    sync(ch)
    assert [b for _, _, b in drain(ch, src)] == [b"m2"]
    assert ch.is_open


def test_dead_lettered_message_goes_through_the_dlx_alternate_exchange(conn, scratch):
    ch = conn.channel()
    ae, dlx = scratch.exchange("dl-ae"), scratch.exchange("dlx")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(dlx, "direct", arguments={"alternate-exchange": ae})
    caught, src = uniq("caught"), uniq("src")
    ch.queue_declare(caught, exclusive=True)
    ch.queue_bind(caught, ae)
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, _ = one(ch, caught)
    assert (m.exchange, m.routing_key) == (dlx, src)
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange="", routing_keys=[src])


# =========================================================================== ours_only: amq.dead-letter

AMQ_DL = "amq.dead-letter"


@pytest.mark.ours_only
def test_amq_dead_letter_exchange_exists(conn):
    ch = conn.channel()
    ch.exchange_declare(AMQ_DL, passive=True)
    ch.exchange_declare(AMQ_DL, "topic", durable=True)  # equivalent redeclare is allowed

    def refused(action):
        c = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as ei:
            action(c)
        return ei.value.reply_code, ei.value.reply_text

    assert refused(lambda c: c.exchange_declare(AMQ_DL, "direct", durable=True)) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{AMQ_DL}' in {VHOST}: "
             "received 'direct' but current is 'topic'")
    assert refused(lambda c: c.exchange_declare(AMQ_DL, "topic", durable=False)) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{AMQ_DL}' in {VHOST}: "
             "received 'false' but current is 'true'")
    assert refused(lambda c: c.exchange_delete(AMQ_DL)) == (
        403, f"ACCESS_REFUSED - deletion of system exchange '{AMQ_DL}' in {VHOST} not allowed")
    ch.exchange_declare(AMQ_DL, passive=True)


def kill(ch, q, reason, conn):
    """Makes the single message in q (published with routing key "rk" to exchange x) die for
    `reason`; q was declared with the arguments `reason_args(reason)`."""
    if reason == "rejected":
        (m, _, _), = get_n(ch, q, 1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
    elif reason == "delivery_limit":
        (m, _, _), = get_n(ch, q, 1, auto_ack=False)
        ch.basic_nack(m.delivery_tag, requeue=True)  # limit 0: the first return kills it
    # expired: the TTL does it; maxlen: the second publish does it


def reason_args(reason):
    return {"rejected": {}, "expired": {"x-message-ttl": 100}, "maxlen": {"x-max-length": 1},
            "delivery_limit": {"x-delivery-limit": 0}}[reason]


@pytest.mark.ours_only
@pytest.mark.parametrize("reason", ["rejected", "expired", "maxlen", "delivery_limit"])
def test_amq_dead_letter_is_the_default_target(conn, scratch, reason):
    ch = conn.channel()
    x = scratch.exchange("orig")
    ch.exchange_declare(x, "direct")
    src, dlq = uniq("src"), uniq("dlq")
    ch.queue_declare(src, exclusive=True, arguments=reason_args(reason))
    ch.queue_bind(src, x, "rk")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_bind(dlq, AMQ_DL, src)  # this queue's dead letters only
    ch.basic_publish(x, "rk", b"dies", pika.BasicProperties(message_id="m1", expiration="60000"))
    if reason == "maxlen":
        ch.basic_publish(x, "rk", b"pushes it out")
    kill(ch, src, reason, conn)
    m, p, body = one(ch, dlq)
    assert (m.exchange, m.routing_key, m.redelivered, body, p.message_id) == (AMQ_DL, src, False, b"dies", "m1")
    assert p.expiration is None
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason=reason, exchange=x, routing_keys=["rk"], original_expiration="60000")
    check_first_death(p.headers, queue=src, reason=reason, exchange=x)


@pytest.mark.ours_only
def test_amq_dead_letter_hash_binding_collects_all_queues(conn):
    ch = conn.channel()
    a, b, dlq = uniq("src-a"), uniq("src-b"), uniq("dlq-all")
    ch.queue_declare(a, exclusive=True)
    ch.queue_declare(b, exclusive=True, arguments={"x-message-ttl": 100})
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_bind(dlq, AMQ_DL, "#")
    try:
        ch.basic_publish("", a, b"from a")
        ch.basic_publish("", b, b"from b")
        (m, _, _), = get_n(ch, a, 1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        # other tests' dead letters may pass through '#' too: keep only ours
        ours = {}
        deadline = time.monotonic() + 2.0
        while len(ours) < 2 and time.monotonic() < deadline:
            m, p, body = ch.basic_get(dlq, auto_ack=True)
            if m is None:
                pause(conn, 0.02)
                continue
            if m.routing_key in (a, b):
                ours[m.routing_key] = (m, p, body)
        assert set(ours) == {a, b}
        assert ours[a][2] == b"from a" and ours[b][2] == b"from b"
        check_death(ours[a][1].headers["x-death"][0], queue=a, reason="rejected", exchange="", routing_keys=[a])
        check_death(ours[b][1].headers["x-death"][0], queue=b, reason="expired", exchange="", routing_keys=[b])
    finally:
        ch.queue_unbind(dlq, AMQ_DL, "#")


@pytest.mark.ours_only
def test_amq_dead_letter_queue_name_binding_collects_only_that_queue(conn):
    ch = conn.channel()
    a, b, dlq = uniq("src-a"), uniq("src-b"), uniq("dlq-a")
    for q in (a, b, dlq):
        ch.queue_declare(q, exclusive=True)
    ch.queue_bind(dlq, AMQ_DL, a)
    for q in (a, b):
        ch.basic_publish("", q, q.encode())
        (m, _, _), = get_n(ch, q, 1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
    m, _, body = one(ch, dlq)
    assert (m.routing_key, body) == (a, a.encode())
    nothing_in(conn, ch, dlq, wait=0.1)
    assert ch.basic_get(b) == (None, None, None)


@pytest.mark.ours_only
def test_amq_dead_letter_without_bindings_drops(conn):
    ch = conn.channel()
    src = uniq("src")
    ch.queue_declare(src, exclusive=True, arguments={"x-max-length": 1})
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", src, f"m{i}".encode())
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    sync(ch)
    assert ch.basic_get(src) == (None, None, None)
    assert ch.is_open


@pytest.mark.ours_only
@pytest.mark.parametrize("own", ["named exchange", "default exchange"])
def test_own_dead_letter_exchange_wins_over_amq_dead_letter(conn, scratch, own):
    ch = conn.channel()
    src, own_dlq, amq_dlq = uniq("src"), uniq("own-dlq"), uniq("amq-dlq")
    ch.queue_declare(own_dlq, exclusive=True)
    ch.queue_declare(amq_dlq, exclusive=True)
    ch.queue_bind(amq_dlq, AMQ_DL, src)
    if own == "named exchange":
        dlx = scratch.exchange("own-dlx")
        ch.exchange_declare(dlx, "fanout")
        ch.queue_bind(own_dlq, dlx)
        args = {"x-dead-letter-exchange": dlx}
    else:
        args = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": own_dlq}
    ch.queue_declare(src, exclusive=True, arguments=args)
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, p, body = one(ch, own_dlq)
    assert body == b"m"
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange="", routing_keys=[src])
    nothing_in(conn, ch, amq_dlq, wait=0.1)


@pytest.mark.ours_only
def test_own_dead_letter_exchange_missing_does_not_fall_back_to_amq_dead_letter(conn):
    ch = conn.channel()
    src, amq_dlq = uniq("src"), uniq("amq-dlq")
    ch.queue_declare(amq_dlq, exclusive=True)
    ch.queue_bind(amq_dlq, AMQ_DL, src)
    ch.queue_declare(src, exclusive=True, arguments={"x-dead-letter-exchange": uniq("never-declared")})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=False)
    nothing_in(conn, ch, amq_dlq, wait=0.2)


@pytest.mark.ours_only
def test_amq_dead_letter_never_routes_back_into_the_queue_it_died_in(conn):
    ch = conn.channel()
    src, dlq = uniq("src"), uniq("dlq-all")
    ch.queue_declare(src, exclusive=True)
    ch.queue_declare(dlq, exclusive=True)  # no DLX of its own: its dead letters go to amq.dead-letter too
    ch.queue_bind(dlq, AMQ_DL, "#")
    try:
        ch.basic_publish("", src, b"m")
        (m, _, _), = get_n(ch, src, 1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        # it is in the DLQ once; rejecting it there drops it instead of looping
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            (m, p, body), = get_n(ch, dlq, 1, auto_ack=False)
            if m.routing_key == src:
                break
            ch.basic_ack(m.delivery_tag)  # someone else's dead letter
        assert (m.routing_key, body) == (src, b"m")
        ch.basic_reject(m.delivery_tag, requeue=False)
        pause(conn, 0.3)
        for m, p, body in drain(ch, dlq):
            assert m.routing_key != dlq and body != b"m", (m, p.headers)
    finally:
        ch.queue_unbind(dlq, AMQ_DL, "#")


# =========================================================================== ours_only: x-delivery-limit


def delivery_count(props):
    h = props.headers or {}
    return h.get("x-delivery-count")


@pytest.mark.ours_only
def test_delivery_limit_counts_requeues_then_dead_letters(conn):
    ch = conn.channel()
    src, dlq = uniq("limited"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments={
        "x-delivery-limit": 2, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"poison", pika.BasicProperties(headers={"mine": "kept"}))
    seen = []
    for _ in range(3):
        (m, p, body), = get_n(ch, src, 1, auto_ack=False)
        seen.append((m.redelivered, delivery_count(p), p.headers.get("mine") if p.headers else None))
        ch.basic_nack(m.delivery_tag, requeue=True)
    assert seen == [(False, None, "kept"), (True, 1, "kept"), (True, 2, "kept")]
    # the third return would make it 3 > 2: dead-lettered instead
    m, p, body = one(ch, dlq)
    assert (m.exchange, m.routing_key, m.redelivered, body) == ("", dlq, False, b"poison")
    assert p.headers["mine"] == "kept"
    (death,) = p.headers["x-death"]
    check_death(death, queue=src, reason="delivery_limit", exchange="", routing_keys=[src])
    check_first_death(p.headers, queue=src, reason="delivery_limit", exchange="")
    assert ch.basic_get(src) == (None, None, None)


@pytest.mark.ours_only
def test_delivery_count_header_is_a_long(conn):
    ch = conn.channel()
    src = uniq("limited")
    ch.queue_declare(src, exclusive=True, arguments={"x-delivery-limit": 5})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_reject(m.delivery_tag, requeue=True)
    (m, p, _), = get_n(ch, src, 1, auto_ack=False)
    assert delivery_count(p) == 1 and delivery_count(p).kind == b"l"


@pytest.mark.ours_only
@pytest.mark.parametrize("how", ["reject requeue", "nack requeue", "channel close", "recover"])
def test_every_kind_of_return_counts_towards_the_delivery_limit(conn, how):
    ch = conn.channel()
    src, dlq = uniq("limited"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments={
        "x-delivery-limit": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"m")
    counts = []
    for _ in range(2):
        taker = conn.channel()
        got = []
        taker.basic_consume(src, lambda c, m, p, b: got.append((m, p)), consumer_tag="t")
        assert pump_until(conn, lambda: len(got) == 1)
        m, p = got[0]
        counts.append(delivery_count(p))
        if how != "channel close":
            taker.basic_cancel("t")  # so that the returned message is not delivered to it again
        if how == "reject requeue":
            taker.basic_reject(m.delivery_tag, requeue=True)
        elif how == "nack requeue":
            taker.basic_nack(m.delivery_tag, requeue=True)
        elif how == "recover":
            taker.basic_recover(requeue=True)
        taker.close()  # for "channel close", this is the return
    assert counts == [None, 1]
    _, p, _ = one(ch, dlq)
    check_death(p.headers["x-death"][0], queue=src, reason="delivery_limit", exchange="", routing_keys=[src])


@pytest.mark.ours_only
def test_delivery_limit_zero_dead_letters_on_first_return(conn):
    ch = conn.channel()
    src, dlq = uniq("limited"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments={
        "x-delivery-limit": 0, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"m")
    (m, p, _), = get_n(ch, src, 1, auto_ack=False)
    assert delivery_count(p) is None
    ch.basic_reject(m.delivery_tag, requeue=True)
    _, p, _ = one(ch, dlq)
    check_death(p.headers["x-death"][0], queue=src, reason="delivery_limit", exchange="", routing_keys=[src])


@pytest.mark.ours_only
def test_delivery_limit_reject_without_requeue_is_reason_rejected(conn):
    ch = conn.channel()
    src, dlq = uniq("limited"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(src, exclusive=True, arguments={
        "x-delivery-limit": 3, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", src, b"m")
    (m, _, _), = get_n(ch, src, 1, auto_ack=False)
    ch.basic_nack(m.delivery_tag, requeue=True)
    (m, p, _), = get_n(ch, src, 1, auto_ack=False)
    assert delivery_count(p) == 1
    ch.basic_nack(m.delivery_tag, requeue=False)
    _, p, _ = one(ch, dlq)
    check_death(p.headers["x-death"][0], queue=src, reason="rejected", exchange="", routing_keys=[src])


@pytest.mark.ours_only
def test_delivery_limit_without_dead_letter_target_drops(conn):
    ch = conn.channel()
    src = uniq("limited")
    ch.queue_declare(src, exclusive=True, arguments={"x-delivery-limit": 1})
    ch.basic_publish("", src, b"m")
    ch.basic_publish("", src, b"next")
    for expected in (None, 1):
        (m, p, body), = get_n(ch, src, 1, auto_ack=False)
        assert (body, delivery_count(p)) == (b"m", expected)
        ch.basic_nack(m.delivery_tag, requeue=True)
    (m, p, body), = get_n(ch, src, 1)
    assert (body, delivery_count(p)) == (b"next", None)
    assert ch.basic_get(src) == (None, None, None)


# =========================================================================== ours_only: x-last-death-*


@pytest.mark.ours_only
def test_last_death_headers(conn):
    ch = conn.channel()
    stage1, stage2, dlq = uniq("stage1"), uniq("stage2"), uniq("dlq")
    ch.queue_declare(dlq, exclusive=True)
    ch.queue_declare(stage2, exclusive=True, arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.queue_declare(stage1, exclusive=True, arguments={
        "x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": stage2})
    ch.basic_publish("", stage1, b"m")
    (m, p, _), = get_n(ch, stage2, 1, timeout=2.0, auto_ack=False)
    assert {k: p.headers[k] for k in ("x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")} == {
        "x-last-death-exchange": "", "x-last-death-queue": stage1, "x-last-death-reason": "expired"}
    ch.basic_reject(m.delivery_tag, requeue=False)
    _, p, _ = one(ch, dlq)
    assert {k: p.headers[k] for k in ("x-last-death-exchange", "x-last-death-queue", "x-last-death-reason")} == {
        "x-last-death-exchange": "", "x-last-death-queue": stage2, "x-last-death-reason": "rejected"}
    check_first_death(p.headers, queue=stage1, reason="expired", exchange="")
    assert [(d["queue"], d["reason"]) for d in p.headers["x-death"]] == [(stage2, "rejected"), (stage1, "expired")]


# =========================================================================== ours_only: consumer timeout


@pytest.mark.ours_only
def test_consumer_timeout_cancels_consumer_and_requeues(own_broker_factory):
    b = own_broker_factory("--consumer-timeout-ms", "500")
    c = connect(b.port)
    try:
        ch = c.channel()
        q = uniq("slow-consumer")
        ch.queue_declare(q, exclusive=True)
        ch.basic_publish("", q, b"work")
        cancelled, got = [], []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        ch.basic_consume(q, lambda c_, m, p, body: got.append((m, body)), consumer_tag="sleepy")
        assert pump_until(c, lambda: len(got) == 1)
        assert got[0][0].redelivered is False
        # never acked: after ~500 ms the broker cancels the consumer (basic.cancel)
        assert not pump_until(c, lambda: cancelled, timeout=0.3)
        assert pump_until(c, lambda: cancelled == ["sleepy"], timeout=2.0), cancelled
        # the channel and the connection stay open
        assert ch.is_open and c.is_open
        # the message was requeued: the next consumer gets it, flagged redelivered
        again = []
        ch2 = c.channel()
        ch2.basic_consume(q, lambda c_, m, p, body: again.append((m, body)))
        assert pump_until(c, lambda: len(again) == 1)
        m, body = again[0]
        assert (body, m.redelivered) == (b"work", True)
        ch2.basic_ack(m.delivery_tag)
        round_trip(ch)
        assert len(got) == 1
    finally:
        if c.is_open:
            c.close()


@pytest.mark.ours_only
def test_consumer_timeout_spares_consumers_that_ack(own_broker_factory):
    b = own_broker_factory("--consumer-timeout-ms", "500")
    c = connect(b.port)
    try:
        ch = c.channel()
        q = uniq("busy-consumer")
        ch.queue_declare(q, exclusive=True)
        cancelled, got = [], []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))

        def on_message(c_, m, p, body):
            got.append(body)
            c_.basic_ack(m.delivery_tag)

        ch.basic_consume(q, on_message, consumer_tag="diligent")
        for i in range(4):
            ch.basic_publish("", q, f"m{i}".encode())
            pause(c, 0.25)
        pause(c, 0.5)
        assert got == [b"m0", b"m1", b"m2", b"m3"]
        assert cancelled == []
        assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    finally:
        if c.is_open:
            c.close()


# =========================================================================== ours_only: restart


@pytest.mark.ours_only
def test_dead_letters_survive_a_restart(own_broker_factory):
    b = own_broker_factory()
    dlx, dlq, src = uniq("dlx"), uniq("dlq"), uniq("src")
    persistent = pika.BasicProperties(delivery_mode=2)
    c = connect(b.port)
    ch = c.channel()
    ch.exchange_declare(dlx, "direct", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx, "dead")
    ch.queue_declare(src, durable=True, arguments={
        "x-message-ttl": 300, "x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead"})
    ch.confirm_delivery()
    ch.basic_publish("", src, b"expires before", persistent)
    assert len(get_n(ch, dlq, 1, timeout=2.0, auto_ack=False)) == 1  # dead-lettered, left unacked
    ch.basic_publish("", src, b"expires after", persistent)
    c.close()
    b.restart()
    c = connect(b.port)
    try:
        ch = c.channel()
        got = get_n(ch, dlq, 2, timeout=3.0, auto_ack=False)
        assert [body for _, _, body in got] == [b"expires before", b"expires after"]
        for m, p, _ in got:
            assert (m.exchange, m.routing_key, p.delivery_mode) == (dlx, "dead", 2)
            (death,) = p.headers["x-death"]
            check_death(death, queue=src, reason="expired", exchange="", routing_keys=[src])
            check_first_death(p.headers, queue=src, reason="expired", exchange="")
        assert got[0][0].redelivered is True  # it had been delivered before the restart
        ch.basic_ack(got[-1][0].delivery_tag, multiple=True)
        assert ch.basic_get(src) == (None, None, None)
    finally:
        if c.is_open:
            c.close()
