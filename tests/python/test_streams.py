"""Streams (x-queue-type: stream) over AMQP 0-9-1, issue 15: declare and its argument
validation, consumers with x-stream-offset, what streams refuse, confirms and counts,
retention by size, delete, and (ours_only) durability across a restart.

Every expected code and text was captured from RabbitMQ 3.10 (see notes/stream-ref.md).
Things to know about RabbitMQ's streams that shape these tests:

- A stream consumer needs a consumer prefetch (basic.qos, non-global); acks are credit,
  not removal. Deliveries carry the header x-stream-offset, AMQP type 'l' (signed 64-bit).
- Without x-stream-offset a consumer starts at 'next'.
- RabbitMQ reads in chunks (a batch of messages written together). 'last' starts at the
  first message of the last chunk, and a consumer may get a whole chunk even past its
  prefetch. Tests that depend on chunk boundaries publish with confirms, one message at a
  time (pika's confirm mode waits for each confirm), which makes one chunk per message.
- Offsets are consecutive within a segment; a segment roll inserts a non-message entry,
  so after a roll the next message's offset skips one. Only the retention test rolls
  segments (default segment size is 500 MB).
- The message and consumer counts in declare-ok (and the HTTP API) come from statistics
  RabbitMQ refreshes every 5 s, so the count test polls with a deadline.
- basic.get, queue.purge, basic.nack/reject and auto-ack consumers close the connection
  (540 NOT_IMPLEMENTED), not just the channel.
"""
import datetime
import struct
import time

import pika
import pika.data
import pytest
from pika.compat import long
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conftest import connect, pump_until, round_trip, uniq

VHOST = "vhost '/'"
STREAM = {"x-queue-type": "stream"}


# =========================================================================== helpers


def sync(ch):
    """A harmless synchronous method: an asynchronous error surfaces as an exception."""
    ch.basic_qos(prefetch_count=1)


def declare_stream(ch, q, **args):
    return ch.queue_declare(q, durable=True, arguments={**STREAM, **args}).method


def queue_exists(conn, q):
    ch = conn.channel()
    try:
        ch.queue_declare(q, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def channel_error(conn, action):
    """Runs action(ch) on a new channel; asserts the broker closed just that channel.
    Returns (reply_code, reply_text)."""
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        action(ch)
        sync(ch)
    assert ch.is_closed and conn.is_open
    round_trip(conn)
    return ei.value.reply_code, ei.value.reply_text


def connection_error(connect_more, action):
    """Runs action(ch) on a channel of a new connection; asserts the broker closed that
    connection. Returns (reply_code, reply_text)."""
    victim = connect_more()
    ch = victim.channel()
    with pytest.raises(ConnectionClosedByBroker) as ei:
        action(ch)
        sync(ch)
    assert victim.is_closed
    round_trip(connect_more())
    return ei.value.reply_code, ei.value.reply_text


def publish_each(conn, q, bodies, props=None):
    """Publishes with confirms, one message at a time (one chunk per message)."""
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies:
        ch.basic_publish("", q, b, props)
    ch.close()


class Reader:
    """A stream consumer on its own channel; deliveries land in .got as
    (offset, body, method, properties)."""

    def __init__(self, conn, q, offset=None, prefetch=10, ack=False, arguments=None, exclusive=False):
        self.conn = conn
        self.ch = conn.channel()
        self.ch.basic_qos(prefetch_count=prefetch)
        self.got = []
        self.ack = ack
        args = dict(arguments or {})
        if offset is not None:
            args["x-stream-offset"] = offset
        self.tag = self.ch.basic_consume(q, self._on, arguments=args or None, exclusive=exclusive)

    def _on(self, ch, method, props, body):
        self.got.append(((props.headers or {}).get("x-stream-offset"), body, method, props))
        if self.ack:
            ch.basic_ack(method.delivery_tag)

    def offsets(self):
        return [o for o, _, _, _ in self.got]

    def bodies(self):
        return [b for _, b, _, _ in self.got]

    def wait(self, n, timeout=3.0):
        """Pumps until n deliveries arrived; returns whether they did."""
        return pump_until(self.conn, lambda: len(self.got) >= n, timeout)

    def settle(self, seconds=0.3):
        """Keeps pumping for a short while: proves nothing more arrives."""
        pump_until(self.conn, lambda: False, seconds)

    def close(self):
        if self.ch.is_open:
            self.ch.close()


def first_offsets(conn, q, n=1, timeout=2.0):
    """The offsets of the first n messages a consumer from 'first' gets."""
    r = Reader(conn, q, "first", prefetch=max(n, 1))
    r.wait(n, timeout)
    r.close()
    return r.offsets()


def bodies_of(n, prefix="m"):
    return [f"{prefix}{i}".encode() for i in range(n)]


@pytest.fixture
def stream(conn, scratch):
    """A new durable stream (deleted at the end)."""
    q = scratch.queue("stream")
    declare_stream(conn.channel(), q)
    return q


def invalid_arg(q, arg, detail):
    return f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in {VHOST}: {detail}"


def inequivalent(q, arg, detail):
    return f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{q}' in {VHOST}: {detail}"


# =========================================================================== 1. declare


def test_declare_durable_stream(conn, scratch):
    q = scratch.queue("stream")
    ch = conn.channel()
    ok = declare_stream(ch, q)
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    ok = declare_stream(ch, q)  # the same declaration again
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)
    ok = ch.queue_declare(q, passive=True).method
    assert (ok.queue, ok.message_count, ok.consumer_count) == (q, 0, 0)


@pytest.mark.parametrize("flags,prop", [
    ({"durable": False}, "non-durable"),
    ({"durable": True, "exclusive": True}, "exclusive-owner"),
    ({"durable": True, "auto_delete": True}, "auto-delete"),
])
def test_406_stream_must_be_durable_non_exclusive_non_auto_delete(conn, scratch, flags, prop):
    q = scratch.queue("stream-prop")
    code, text = channel_error(conn, lambda ch: ch.queue_declare(q, arguments=STREAM, **flags))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid property '{prop}' for queue '{q}' in {VHOST}")
    assert not queue_exists(conn, q)


def test_406_server_named_stream(conn):
    code, text = channel_error(conn, lambda ch: ch.queue_declare("", durable=True, arguments=STREAM))
    assert (code, text) == (406, "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_stream_queue")


@pytest.mark.parametrize("arg,value", [
    ("x-max-length-bytes", 1000),
    ("x-max-length-bytes", 0),
    ("x-max-length-bytes", long(10 ** 12)),
    ("x-max-age", "1Y"),
    ("x-max-age", "1M"),
    ("x-max-age", "7D"),
    ("x-max-age", "12h"),
    ("x-max-age", "30m"),
    ("x-max-age", "10s"),
    ("x-max-age", "01h"),
    ("x-max-age", "100000000Y"),
    ("x-stream-max-segment-size-bytes", 1000),
    ("x-stream-max-segment-size-bytes", 0),
    ("x-queue-leader-locator", "client-local"),
    ("x-queue-leader-locator", "balanced"),
    ("x-initial-cluster-size", 1),
    ("x-stream-offset", "first"),  # a consumer argument: ignored on declare
    ("x-foo", "bar"),  # unknown arguments are ignored
])
def test_stream_arguments_accepted(conn, scratch, arg, value):
    q = scratch.queue("stream-arg")
    ok = declare_stream(conn.channel(), q, **{arg: value})
    assert (ok.queue, ok.message_count) == (q, 0)
    assert queue_exists(conn, q)


def test_all_retention_arguments_together(conn, scratch):
    q = scratch.queue("stream-ret")
    args = {"x-max-length-bytes": 20_000_000, "x-max-age": "7D", "x-stream-max-segment-size-bytes": 5_000_000}
    ch = conn.channel()
    declare_stream(ch, q, **args)
    declare_stream(ch, q, **args)


# x-max-age: digits followed by exactly one of Y M D h m s. RabbitMQ 3.10 refuses some
# malformed values with 541 INTERNAL_ERROR (a crash, see the ours_only test below).
INVALID = [
    ("x-max-age", "10x", "invalid_max_age"),
    ("x-max-age", "0s", "invalid_max_age"),
    ("x-max-age", "1h30m", "invalid_max_age"),
    ("x-max-age", "1.5h", "invalid_max_age"),
    ("x-max-age", "1d", "invalid_max_age"),
    ("x-max-age", "1y", "invalid_max_age"),
    ("x-max-age", "1W", "invalid_max_age"),
    ("x-max-age", 10, "{unacceptable_type,signedint}"),
    ("x-max-age", b"1h", "{unacceptable_type,binary}"),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "abc", '"expected integer, got longstr"'),
    ("x-stream-max-segment-size-bytes", -1, "{value_negative,-1}"),
    ("x-stream-max-segment-size-bytes", "abc", '"expected integer, got longstr"'),
    ("x-queue-leader-locator", "foo", "invalid_queue_locator_arg"),
]


@pytest.mark.parametrize("arg,value,detail", INVALID, ids=[f"{a}={v!r}" for a, v, _ in INVALID])
def test_406_invalid_stream_argument(conn, scratch, arg, value, detail):
    q = scratch.queue("stream-bad")
    code, text = channel_error(conn, lambda ch: declare_stream(ch, q, **{arg: value}))
    assert (code, text) == (406, invalid_arg(q, arg, detail))
    assert not queue_exists(conn, q)


@pytest.mark.ours_only
@pytest.mark.parametrize("value", ["abc", "", "h", " 1h", "-1s"])
def test_406_malformed_max_age(conn, scratch, value):
    # RabbitMQ 3.10 closes the connection with 541 INTERNAL_ERROR for these (its parser
    # crashes); we answer them like '10x'.
    q = scratch.queue("stream-bad-age")
    code, text = channel_error(conn, lambda ch: declare_stream(ch, q, **{"x-max-age": value}))
    assert (code, text) == (406, invalid_arg(q, "x-max-age", "invalid_max_age"))
    assert not queue_exists(conn, q)


UNSUPPORTED = [
    ("x-message-ttl", 1000),
    ("x-expires", 10000),
    ("x-max-length", 10),
    ("x-max-priority", 5),
    ("x-dead-letter-exchange", "dlx"),
    ("x-dead-letter-routing-key", "k"),
    ("x-overflow", "reject-publish"),
    ("x-overflow", "drop-head"),
    ("x-single-active-consumer", True),
    ("x-queue-mode", "lazy"),
    ("x-queue-master-locator", "min-masters"),
    ("x-delivery-limit", 3),
    ("x-quorum-initial-group-size", 1),
    ("x-max-in-memory-length", 3),
]


@pytest.mark.parametrize("arg,value", UNSUPPORTED, ids=[f"{a}={v!r}" for a, v in UNSUPPORTED])
def test_406_argument_streams_do_not_support(conn, scratch, arg, value):
    q = scratch.queue("stream-unsupported")
    code, text = channel_error(conn, lambda ch: declare_stream(ch, q, **{arg: value}))
    assert (code, text) == (
        406, f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in {VHOST} of queue type rabbit_stream_queue")
    assert not queue_exists(conn, q)


def test_406_redeclare_with_different_retention(conn, scratch):
    q = scratch.queue("stream-redeclare")
    declare_stream(conn.channel(), q, **{"x-max-length-bytes": 1000, "x-max-age": "7D"})
    cases = [
        ({"x-max-length-bytes": 2000, "x-max-age": "7D"},
         inequivalent(q, "x-max-length-bytes", "received '2000' but current is '1000'")),
        ({"x-max-length-bytes": 1000, "x-max-age": "8D"},
         inequivalent(q, "x-max-age", "received '8D' but current is '7D'")),
        ({}, inequivalent(q, "x-max-length-bytes",
                          "received none but current is the value '1000' of type 'signedint'")),
        ({"x-max-length-bytes": 1000, "x-max-age": "7D", "x-stream-max-segment-size-bytes": 5000},
         inequivalent(q, "x-stream-max-segment-size-bytes",
                      "received the value '5000' of type 'signedint' but current is none")),
    ]
    for args, expected in cases:
        code, text = channel_error(conn, lambda ch: declare_stream(ch, q, **args))
        assert (code, text) == (406, expected), args
    # the stream is unchanged
    declare_stream(conn.channel(), q, **{"x-max-length-bytes": 1000, "x-max-age": "7D"})


def test_406_redeclare_adding_max_age(conn, stream):
    code, text = channel_error(conn, lambda ch: declare_stream(ch, stream, **{"x-max-age": "1h"}))
    assert (code, text) == (406, inequivalent(
        stream, "x-max-age", "received the value '1h' of type 'longstr' but current is none"))


def test_406_redeclare_stream_as_another_type(conn, stream):
    cases = [
        ({}, "received none but current is the value 'stream' of type 'longstr'"),
        ({"x-queue-type": "classic"}, "received 'classic' but current is 'stream'"),
        ({"x-queue-type": "quorum"}, "received 'quorum' but current is 'stream'"),
    ]
    for args, detail in cases:
        code, text = channel_error(conn, lambda ch: ch.queue_declare(stream, durable=True, arguments=args))
        assert (code, text) == (406, inequivalent(stream, "x-queue-type", detail)), args


def test_406_redeclare_classic_queue_as_stream(conn, scratch):
    q = scratch.queue("classic")
    conn.channel().queue_declare(q, durable=True)
    code, text = channel_error(conn, lambda ch: declare_stream(ch, q))
    assert (code, text) == (406, inequivalent(
        q, "x-queue-type", "received the value 'stream' of type 'longstr' but current is none"))


def test_redeclare_stream_with_other_flags(conn, stream):
    code, text = channel_error(conn, lambda ch: ch.queue_declare(stream, durable=False, arguments=STREAM))
    assert (code, text) == (406, inequivalent(stream, "durable", "received 'false' but current is 'true'"))
    code, text = channel_error(
        conn, lambda ch: ch.queue_declare(stream, durable=True, exclusive=True, arguments=STREAM))
    assert (code, text) == (405, (
        f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{stream}' in {VHOST}. "
        "It could be originally declared on another connection or the exclusive property value "
        "does not match that of the original declaration."))


def test_redeclare_does_not_check_other_arguments(conn, stream):
    # RabbitMQ checks equivalence only for the arguments it knows to compare; the others
    # (even ones refused on creation, like x-message-ttl) pass on a redeclare.
    ch = conn.channel()
    assert declare_stream(ch, stream, **{"x-foo": 1}).queue == stream
    assert declare_stream(ch, stream, **{"x-message-ttl": 1}).queue == stream


# =========================================================================== 2. consume


def test_406_consume_without_prefetch(conn, stream):
    prefetch_not_set = f"PRECONDITION_FAILED - consumer prefetch count is not set for 'queue '{stream}' in {VHOST}'"

    def no_qos(ch):
        ch.basic_consume(stream, lambda *a: None)

    def qos_zero(ch):
        ch.basic_qos(prefetch_count=0)
        ch.basic_consume(stream, lambda *a: None)

    def global_qos_only(ch):
        ch.basic_qos(prefetch_count=10, global_qos=True)
        ch.basic_consume(stream, lambda *a: None)

    for action in (no_qos, qos_zero, global_qos_only):
        assert channel_error(conn, action) == (406, prefetch_not_set), action.__name__


def test_540_consume_with_global_qos(connect_more, stream):
    # consumer prefetch set, then global qos: the connection is closed
    def action(ch):
        ch.basic_qos(prefetch_count=2)
        ch.basic_qos(prefetch_count=3, global_qos=True)
        ch.basic_consume(stream, lambda *a: None)

    assert connection_error(connect_more, action) == (
        540, f"NOT_IMPLEMENTED - queue '{stream}' in {VHOST} does not support global qos")


def test_global_qos_then_consumer_prefetch_is_accepted(conn, stream):
    # The other order works: the consumer prefetch set last is what counts.
    publish_each(conn, stream, bodies_of(5))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=3, global_qos=True)
    ch.basic_qos(prefetch_count=2)
    got = []
    ch.basic_consume(stream, lambda c, m, p, b: got.append(b), arguments={"x-stream-offset": "first"})
    assert pump_until(conn, lambda: len(got) >= 2)
    pump_until(conn, lambda: False, 0.3)
    assert got == [b"m0", b"m1"]


def test_540_consume_with_auto_ack(connect_more, stream):
    def action(ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(stream, lambda *a: None, auto_ack=True)

    assert connection_error(connect_more, action) == (
        540, f"NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues queue '{stream}' in {VHOST}")


def test_consume_from_first_offsets_and_header_type(conn, stream, monkeypatch):
    # Record the AMQP field type of every header pika decodes.
    kinds = []
    decode_table = pika.data.decode_table

    def typed(encoded, offset):
        result, end = decode_table(encoded, offset)
        o = offset + 4
        limit = o + struct.unpack_from(">I", encoded, offset)[0]
        while o < limit:
            key, o = pika.data.decode_short_string(encoded, o)
            kinds.append((key, encoded[o:o + 1]))
            _, o = pika.data.decode_value(encoded, o)
        return result, end

    publish_each(conn, stream, bodies_of(5))
    monkeypatch.setattr(pika.data, "decode_table", typed)
    r = Reader(conn, stream, "first")
    assert r.wait(5)
    assert r.offsets() == [0, 1, 2, 3, 4]
    assert r.bodies() == bodies_of(5)
    assert [m.delivery_tag for _, _, m, _ in r.got] == [1, 2, 3, 4, 5]
    assert all(m.redelivered is False for _, _, m, _ in r.got)
    assert all((m.exchange, m.routing_key) == ("", stream) for _, _, m, _ in r.got)
    assert [k for k in kinds if k[0] == "x-stream-offset"] == [("x-stream-offset", b"l")] * 5


def test_properties_are_kept_and_offset_header_is_the_brokers(conn, stream):
    props = pika.BasicProperties(headers={"mine": 1, "x-stream-offset": "fake"}, content_type="text/plain",
                                 message_id="id1", timestamp=123, priority=3, delivery_mode=2)
    publish_each(conn, stream, [b"a"], props)
    r = Reader(conn, stream, "first")
    assert r.wait(1)
    p = r.got[0][3]
    assert p.headers == {"mine": 1, "x-stream-offset": 0}
    assert (p.content_type, p.message_id, p.timestamp, p.priority, p.delivery_mode) == ("text/plain", "id1", 123, 3, 2)


@pytest.mark.parametrize("offset,expected", [
    ("first", [0, 1, 2, 3, 4]),
    (b"first", [0, 1, 2, 3, 4]),  # a binary 'first' is understood too
    (0, [0, 1, 2, 3, 4]),
    (2, [2, 3, 4]),
    (long(3), [3, 4]),
    (4, [4]),
    (-1, [0, 1, 2, 3, 4]),  # before the start: from the first message
    ("1m", [0, 1, 2, 3, 4]),  # interval: messages of the last minute
    ("10s", [0, 1, 2, 3, 4]),
    ("1h", [0, 1, 2, 3, 4]),
    ("1D", [0, 1, 2, 3, 4]),
])
def test_consume_offsets(conn, stream, offset, expected):
    publish_each(conn, stream, bodies_of(5))
    r = Reader(conn, stream, offset)
    assert r.wait(len(expected))
    r.settle(0.2)
    assert r.offsets() == expected
    assert r.bodies() == [f"m{i}".encode() for i in expected]


def test_consume_from_a_timestamp(conn, stream):
    # pika encodes a datetime as an AMQP timestamp ('T', whole seconds since the epoch).
    now = datetime.datetime.now(datetime.timezone.utc)
    publish_each(conn, stream, bodies_of(3))
    past = Reader(conn, stream, now - datetime.timedelta(minutes=5))
    future = Reader(conn, stream, now + datetime.timedelta(minutes=5))
    assert past.wait(3)
    future.settle(0.3)
    assert past.offsets() == [0, 1, 2]
    assert future.got == []
    # a timestamp after the end of the stream behaves as 'next'
    publish_each(conn, stream, [b"new"])
    assert future.wait(1)
    assert [(o, b) for o, b, _, _ in future.got] == [(3, b"new")]


def test_consume_from_an_offset_past_the_end_waits_for_it(conn, stream):
    publish_each(conn, stream, bodies_of(3))
    r = Reader(conn, stream, 4)
    r.settle(0.3)
    assert r.got == []
    publish_each(conn, stream, [b"m3", b"m4", b"m5"])
    assert r.wait(2)
    r.settle(0.2)
    assert r.offsets() == [4, 5]


def test_406_invalid_offset(conn, stream):
    code, text = channel_error(conn, lambda ch: (
        ch.basic_qos(prefetch_count=10),
        ch.basic_consume(stream, lambda *a: None, arguments={"x-stream-offset": "0s"})))
    assert (code, text) == (406, invalid_arg(stream, "x-stream-offset", '{invalid_stream_offset_arg,{longstr,<<"0s">>}}'))


@pytest.mark.ours_only
def test_406_malformed_offset(conn, stream):
    # RabbitMQ 3.10 closes the connection with 541 INTERNAL_ERROR for 'abc' (and for a bool).
    code, text = channel_error(conn, lambda ch: (
        ch.basic_qos(prefetch_count=10),
        ch.basic_consume(stream, lambda *a: None, arguments={"x-stream-offset": "abc"})))
    assert (code, text) == (406, invalid_arg(stream, "x-stream-offset", '{invalid_stream_offset_arg,{longstr,<<"abc">>}}'))


def test_default_offset_is_next(conn, stream):
    publish_each(conn, stream, bodies_of(3))
    r = Reader(conn, stream)
    r.settle(0.3)
    assert r.got == []
    publish_each(conn, stream, [b"after"])
    assert r.wait(1)
    r.settle(0.2)
    assert [(o, b) for o, b, _, _ in r.got] == [(3, b"after")]


def test_next_gets_only_messages_published_after_consume(conn, stream):
    publish_each(conn, stream, bodies_of(3))
    r = Reader(conn, stream, "next")
    r.settle(0.3)
    assert r.got == []
    publish_each(conn, stream, [b"n0", b"n1"])
    assert r.wait(2)
    r.settle(0.2)
    assert [(o, b) for o, b, _, _ in r.got] == [(3, b"n0"), (4, b"n1")]


def test_last_starts_at_the_last_chunk(conn, stream):
    # 'last' is the start of the last chunk. Each message here is published and confirmed
    # on its own, so each is its own chunk and 'last' is the last message. (Messages
    # published in a burst share chunks, and 'last' then gives several of them.)
    publish_each(conn, stream, bodies_of(5))
    r = Reader(conn, stream, "last")
    assert r.wait(1)
    r.settle(0.3)
    assert [(o, b) for o, b, _, _ in r.got] == [(4, b"m4")]
    publish_each(conn, stream, [b"m5"])
    assert r.wait(2)
    assert r.offsets() == [4, 5]


def test_last_on_an_empty_stream_behaves_as_next(conn, stream):
    r = Reader(conn, stream, "last")
    r.settle(0.3)
    assert r.got == []
    publish_each(conn, stream, [b"first one"])
    assert r.wait(1)
    assert [(o, b) for o, b, _, _ in r.got] == [(0, b"first one")]


def test_two_consumers_read_independently(conn, connect_more, stream):
    publish_each(conn, stream, bodies_of(10))
    a = Reader(conn, stream, "first", ack=True)
    other = connect_more()
    b = Reader(other, stream, 5, ack=True)
    assert a.wait(10) and b.wait(5)
    assert a.offsets() == list(range(10))
    assert b.offsets() == list(range(5, 10))
    # a third one, later, still reads everything: consuming removes nothing
    c = Reader(conn, stream, "first")
    assert c.wait(10)
    assert c.bodies() == bodies_of(10)


def test_acks_are_credit(conn, stream):
    # prefetch 10, 100 messages (one chunk each): the consumer that acks gets them all,
    # the one that does not gets exactly 10.
    publish_each(conn, stream, bodies_of(100))
    acker = Reader(conn, stream, "first", prefetch=10, ack=True)
    holder = Reader(conn, stream, "first", prefetch=10, ack=False)
    assert acker.wait(100, timeout=4.0)
    assert holder.wait(10)
    holder.settle(0.3)
    assert acker.offsets() == list(range(100))
    assert holder.offsets() == list(range(10))
    # acking 5 lets 5 more through
    holder.ch.basic_ack(holder.got[4][2].delivery_tag, multiple=True)
    assert holder.wait(15)
    holder.settle(0.3)
    assert holder.offsets() == list(range(15))


def test_exclusive_consume_flag_is_ignored(conn, connect_more, stream):
    # RabbitMQ accepts basic.consume exclusive=true on a stream and does not enforce it:
    # other consumers, exclusive or not, attach and read the same messages.
    publish_each(conn, stream, bodies_of(3))
    a = Reader(conn, stream, "first", exclusive=True)
    b = Reader(conn, stream, "first", exclusive=True)
    c = Reader(connect_more(), stream, "first")
    assert a.wait(3) and b.wait(3) and c.wait(3)
    assert a.bodies() == b.bodies() == c.bodies() == bodies_of(3)


def test_cancel_and_consume_again(conn, stream):
    publish_each(conn, stream, bodies_of(3))
    r = Reader(conn, stream, "first")
    assert r.wait(3)
    r.ch.basic_cancel(r.tag)
    publish_each(conn, stream, [b"m3"])
    r.settle(0.2)
    assert len(r.got) == 3
    again = Reader(conn, stream, 3)
    assert again.wait(1)
    assert again.bodies() == [b"m3"]


def test_406_ack_of_unknown_delivery_tag(conn, stream):
    publish_each(conn, stream, bodies_of(1))

    def action(ch):
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume(stream, lambda c, m, p, b: got.append(m), arguments={"x-stream-offset": "first"})
        assert pump_until(conn, lambda: got)
        ch.basic_ack(99)

    assert channel_error(conn, action) == (406, "PRECONDITION_FAILED - unknown delivery tag 99")


# =========================================================================== 3. what streams refuse


@pytest.mark.parametrize("auto_ack", [False, True])
def test_540_basic_get(connect_more, stream, auto_ack):
    assert connection_error(connect_more, lambda ch: ch.basic_get(stream, auto_ack=auto_ack)) == (
        540, f"NOT_IMPLEMENTED - basic.get not supported by stream queues queue '{stream}' in {VHOST}")


def test_540_queue_purge(connect_more, stream):
    assert connection_error(connect_more, lambda ch: ch.queue_purge(stream)) == (
        540, f"NOT_IMPLEMENTED - queue.purge not supported by stream queues queue '{stream}' in {VHOST}")


def settle_first_delivery(conn, stream, how):
    """A channel error action: consume from first, then settle the first delivery by how(ch, tag)."""
    def action(ch):
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume(stream, lambda c, m, p, b: got.append(m), arguments={"x-stream-offset": "first"})
        assert pump_until(ch.connection, lambda: got)
        how(ch, got[0].delivery_tag)
    return action


@pytest.mark.parametrize("how", [
    pytest.param(lambda ch, tag: ch.basic_nack(tag, requeue=True), id="nack-requeue"),
    pytest.param(lambda ch, tag: ch.basic_nack(tag, requeue=False), id="nack-no-requeue"),
    pytest.param(lambda ch, tag: ch.basic_nack(tag, multiple=True, requeue=True), id="nack-multiple"),
    pytest.param(lambda ch, tag: ch.basic_reject(tag, requeue=True), id="reject-requeue"),
    pytest.param(lambda ch, tag: ch.basic_reject(tag, requeue=False), id="reject-no-requeue"),
])
def test_540_nack_and_reject(conn, connect_more, stream, how):
    publish_each(conn, stream, bodies_of(2))
    assert connection_error(connect_more, settle_first_delivery(conn, stream, how)) == (
        540, f"NOT_IMPLEMENTED - basic.nack and basic.reject not supported by stream queues queue '{stream}' in {VHOST}")


def test_540_recover_without_requeue(conn, connect_more, stream):
    # RabbitMQ's answer to basic.recover requeue=false on any queue. (requeue=true on a
    # stream consumer's channel: 541 INTERNAL_ERROR, a crash in 3.10; not tested.)
    publish_each(conn, stream, bodies_of(2))
    action = settle_first_delivery(conn, stream, lambda ch, tag: ch.basic_recover(requeue=False))
    assert connection_error(connect_more, action) == (540, "NOT_IMPLEMENTED - requeue=false")


def test_transactions_are_accepted(conn, stream):
    ch = conn.channel()
    ch.tx_select()
    ch.basic_publish("", stream, b"committed")
    ch.tx_commit()
    ch.basic_publish("", stream, b"rolled back")
    ch.tx_rollback()
    publish_each(conn, stream, [b"marker"])
    r = Reader(conn, stream, "first")
    assert r.wait(2)
    r.settle(0.2)
    assert r.bodies() == [b"committed", b"marker"]


# =========================================================================== 4. publish, counts, HTTP API


def wait_for(check, timeout, conn):
    """Polls check() (servicing conn) until it returns true or the deadline passes; returns
    its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        conn.process_data_events(time_limit=0.1)


def test_publish_with_confirms_and_declare_ok_count(conn, stream):
    ch = conn.channel()
    ch.confirm_delivery()
    for b in bodies_of(5):
        ch.basic_publish("", stream, b)  # raises unless confirmed
    # RabbitMQ refreshes a stream's count every 5 s (ours is immediate): poll.
    assert wait_for(lambda: ch.queue_declare(stream, passive=True).method.message_count == 5, 7.0, conn)
    assert declare_stream(ch, stream).message_count == 5
    # consumers do not change the count
    r = Reader(conn, stream, "first", ack=True)
    assert r.wait(5)
    assert ch.queue_declare(stream, passive=True).method.message_count == 5


def test_stream_in_http_api(conn, stream, http_url):
    from httpapi import Api, q as quote

    info = Api(http_url).json(f"/api/queues/{quote('/')}/{quote(stream)}")
    assert info["type"] == "stream"
    assert info["name"] == stream and info["vhost"] == "/"
    assert (info["durable"], info["auto_delete"], info["exclusive"]) == (True, False, False)
    assert info["arguments"] == STREAM


@pytest.mark.slow
def test_stream_counts_in_http_api(conn, stream, http_url):
    # RabbitMQ's management API shows a stream's counts 5-10 s after the publish.
    from httpapi import Api, q as quote

    api = Api(http_url)
    publish_each(conn, stream, bodies_of(5))
    path = f"/api/queues/{quote('/')}/{quote(stream)}"
    info = wait_for(lambda: (lambda i: i if i.get("messages") == 5 else None)(api.json(path)), 15.0, conn)
    assert info, api.json(path)
    assert (info["messages"], info["messages_ready"], info["messages_unacknowledged"]) == (5, 5, 0)
    assert info["type"] == "stream" and info["state"] == "running"
    # stream-specific keys: replica nodes, online replicas, readers per node
    assert isinstance(info["members"], list) and isinstance(info["online"], list)
    assert isinstance(info["readers"], dict)


def test_unroutable_publish_to_deleted_stream(conn, scratch):
    q = scratch.queue("stream")
    declare_stream(conn.channel(), q)
    conn.channel().queue_delete(q)
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("", q, b"x", mandatory=True)


# =========================================================================== 5. retention by size


def test_retention_by_size_removes_old_segments(conn, scratch):
    # 100 messages of 100 bytes in segments of 1000 bytes, at most 3000 bytes kept.
    # RabbitMQ applies retention when a segment rolls; poll for the event with a deadline.
    q = scratch.queue("stream-retention")
    declare_stream(conn.channel(), q, **{"x-max-length-bytes": 3000, "x-stream-max-segment-size-bytes": 1000})
    sent = [str(i).encode().ljust(100, b".") for i in range(100)]
    publish_each(conn, q, sent)
    deadline = time.monotonic() + 4.0
    while True:
        r = Reader(conn, q, "first", prefetch=200)
        r.wait(1, timeout=1.0)
        if r.got and r.got[0][0] > 0:
            break
        r.close()
        assert time.monotonic() < deadline, "retention never removed the first segment"
    # what is left is a tail of what was sent, in order, with increasing offsets
    assert pump_until(conn, lambda: r.bodies()[-1:] == [sent[-1]], 2.0)
    got = r.bodies()
    assert 0 < len(got) < 100
    assert got == sent[-len(got):]
    offsets = r.offsets()
    assert offsets[0] > 0 and offsets == sorted(set(offsets))
    # new messages still get new offsets
    publish_each(conn, q, [b"new"])
    assert pump_until(conn, lambda: r.bodies()[-1:] == [b"new"], 2.0)
    assert r.offsets()[-1] > offsets[-1]


# =========================================================================== 6. delete


def test_delete_stream_and_redeclare_empty(conn, scratch):
    q = scratch.queue("stream-delete")
    ch = conn.channel()
    declare_stream(ch, q)
    publish_each(conn, q, bodies_of(5))
    r = Reader(conn, q, "first")
    assert r.wait(5)
    # RabbitMQ answers message_count 0 for a stream (its count is a statistic).
    assert ch.queue_delete(q).method.message_count == 0
    assert not queue_exists(conn, q)
    code, text = channel_error(conn, lambda c: (
        c.basic_qos(prefetch_count=10),
        c.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{q}' in {VHOST}")
    # a stream of the same name starts empty, at offset 0
    ok = declare_stream(ch, q)
    assert (ok.message_count, ok.consumer_count) == (0, 0)
    fresh = Reader(conn, q, "first")
    fresh.settle(0.3)
    assert fresh.got == []
    publish_each(conn, q, [b"again"])
    assert fresh.wait(1)
    assert [(o, b) for o, b, _, _ in fresh.got] == [(0, b"again")]


# =========================================================================== ours_only: restart


@pytest.mark.ours_only
@pytest.mark.own_broker
def test_stream_survives_a_restart(own_broker_factory):
    b = own_broker_factory()
    q = uniq("stream-restart")
    n = 20
    c = connect(b.port)
    declare_stream(c.channel(), q, **{"x-max-age": "7D"})
    publish_each(c, q, bodies_of(n))
    c.close()
    b.restart()
    c = connect(b.port)
    try:
        ch = c.channel()
        declare_stream(ch, q, **{"x-max-age": "7D"})  # same arguments: still equivalent
        assert ch.queue_declare(q, passive=True).method.message_count == n
        r = Reader(c, q, "first", ack=True)
        assert r.wait(n)
        assert r.offsets() == list(range(n))
        assert r.bodies() == bodies_of(n)
        publish_each(c, q, [b"after restart"])
        assert r.wait(n + 1)
        assert r.got[-1][:2] == (n, b"after restart")
        last = Reader(c, q, "last")
        assert last.wait(1)
        assert last.got[0][:2] == (n, b"after restart")
        ch.queue_delete(q)
    finally:
        if c.is_open:
            c.close()


@pytest.mark.ours_only
@pytest.mark.own_broker
def test_confirmed_stream_messages_survive_kill_9(own_broker_factory):
    """kill -9 while a publisher waits for confirms, three times: every confirmed message
    is there after each restart, in order, at consecutive offsets from 0, and the stream
    goes on after the last one."""
    import threading

    b = own_broker_factory()
    q = uniq("stream-kill")
    c = connect(b.port)
    declare_stream(c.channel(), q)
    c.close()
    confirmed = []
    sent = 0
    for _ in range(3):
        stop = threading.Event()

        def publish(start):
            nonlocal sent
            try:
                pc = connect(b.port)
                ch = pc.channel()
                ch.confirm_delivery()
                i = start
                while not stop.is_set():
                    body = f"m{i}".encode()
                    ch.basic_publish("", q, body)  # returns once confirmed
                    confirmed.append(body)
                    i += 1
                    sent = i
            except Exception:
                pass  # the broker went away mid-publish

        t = threading.Thread(target=publish, args=(sent,))
        t.start()
        deadline = time.monotonic() + 10
        start_count = len(confirmed)
        while len(confirmed) < start_count + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.proc.kill()
        b.proc.wait(timeout=5)
        stop.set()
        t.join(timeout=10)
        b._launch()
        c = connect(b.port)
        try:
            r = Reader(c, q, "first", prefetch=500, ack=True)
            assert r.wait(len(confirmed), timeout=10), (len(r.got), len(confirmed))
            r.settle(0.2)
            bodies = r.bodies()
            # a message whose confirm never arrived may be there too, but only at the end
            assert bodies[: len(confirmed)] == confirmed
            assert r.offsets() == list(range(len(bodies)))
            # what is stored but was never confirmed counts as sent
            sent = max(sent, len(bodies))
            del confirmed[:]
            confirmed.extend(bodies)
        finally:
            c.close()
    assert len(confirmed) >= 150


@pytest.mark.ours_only
def test_policy_sets_a_streams_retention_live(conn, scratch, http_url):
    from httpapi import Api, q as quote

    api = Api(http_url)
    q = scratch.queue("stream-policy")
    declare_stream(conn.channel(), q)
    name = uniq("stream-retention")
    api.ok("PUT", f"/api/policies/{quote('/')}/{name}", {
        "pattern": f"^{q}$", "apply-to": "queues",
        "definition": {"max-length-bytes": 3000, "stream-max-segment-size-bytes": 1000}})
    try:
        publish_each(conn, q, [b"x" * 100 for _ in range(100)])
        first = first_offsets(conn, q)
        assert first and first[0] > 0, first
        info = api.json(f"/api/queues/{quote('/')}/{quote(q)}")
        assert info["effective_policy_definition"]["max-length-bytes"] == 3000
        assert info["segments"] > 1
        assert info["disk_size"] <= 3000 + 2 * 1200
    finally:
        api.delete(f"/api/policies/{quote('/')}/{name}")


@pytest.mark.ours_only
def test_400_invalid_stream_policy_keys(http_url):
    from httpapi import Api, q as quote

    api = Api(http_url)
    for key, value in (("max-age", "1d"), ("stream-max-segment-size-bytes", -1)):
        r = api.put(f"/api/policies/{quote('/')}/{uniq('bad')}", {
            "pattern": ".*", "apply-to": "queues", "definition": {key: value}})
        assert r.status == 400, (key, r.status)


# =========================================================================== ours_only: beyond RabbitMQ 3.10


def publish_filtered(conn, q, items):
    """Publishes (body, filter value or None) pairs with confirms, one at a time."""
    ch = conn.channel()
    ch.confirm_delivery()
    for body, value in items:
        headers = {"x-stream-filter-value": value} if value is not None else None
        ch.basic_publish("", q, body, pika.BasicProperties(headers=headers))
    ch.close()


@pytest.mark.ours_only
def test_filtering_delivers_only_matching_messages(conn, stream):
    publish_filtered(conn, stream, [(b"ca1", "california"), (b"ny1", "new-york"), (b"none", None),
                                    (b"ca2", "california"), (b"tx1", "texas")])
    only = Reader(conn, stream, "first", arguments={"x-stream-filter": "california"})
    assert only.wait(2)
    only.settle()
    assert only.bodies() == [b"ca1", b"ca2"]
    assert only.offsets() == [0, 3]
    several = Reader(conn, stream, "first", arguments={
        "x-stream-filter": ["new-york", "texas"], "x-stream-match-unfiltered": True})
    assert several.wait(3)
    several.settle()
    assert several.bodies() == [b"ny1", b"none", b"tx1"]
    # without a filter: everything
    everything = Reader(conn, stream, "first")
    assert everything.wait(5)
    assert everything.bodies() == [b"ca1", b"ny1", b"none", b"ca2", b"tx1"]


@pytest.mark.ours_only
def test_406_bad_filter_argument(connect_more, stream):
    c = connect_more()
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.basic_consume(stream, lambda *a: None, arguments={"x-stream-filter": 5})
    assert e.value.reply_code == 406
    assert e.value.reply_text == (f"PRECONDITION_FAILED - invalid arg 'x-stream-filter' for queue '{stream}' "
                                  f"in {VHOST}: {{unacceptable_type,signedint}}")


def tracking_reader(conn, q, tag, offset=None, prefetch=10, sac=False):
    args = {"x-stream-automatic-offset-tracking": True}
    if sac:
        args["x-single-active-consumer"] = True
    if offset is not None:
        args["x-stream-offset"] = offset
    r = Reader.__new__(Reader)
    r.conn, r.ch, r.got, r.ack = conn, conn.channel(), [], False
    r.ch.basic_qos(prefetch_count=prefetch)
    r.tag = r.ch.basic_consume(q, r._on, consumer_tag=tag, arguments=args)
    return r


def ack_first(r, n):
    for _, _, method, _ in r.got[:n]:
        r.ch.basic_ack(method.delivery_tag)
    sync(r.ch)


@pytest.mark.ours_only
def test_offset_tracking_resumes_after_the_last_ack(conn, stream):
    publish_each(conn, stream, bodies_of(10))
    r = tracking_reader(conn, stream, "tracked-1", offset="first")
    assert r.wait(10)
    ack_first(r, 4)
    r.ch.basic_cancel(r.tag)
    r.close()
    # same tag, no offset: after offset 3, the last acknowledged
    again = tracking_reader(conn, stream, "tracked-1")
    assert again.wait(6)
    assert again.offsets() == [4, 5, 6, 7, 8, 9]
    again.close()
    # an explicit offset wins over the tracked one
    explicit = tracking_reader(conn, stream, "tracked-1", offset="first")
    assert explicit.wait(10)
    assert explicit.offsets()[0] == 0
    # another tag has no tracked offset: the default (next)
    other = tracking_reader(conn, stream, "tracked-2")
    other.settle()
    assert other.got == []


@pytest.mark.ours_only
@pytest.mark.own_broker
def test_offset_tracking_survives_a_restart(own_broker_factory):
    b = own_broker_factory()
    q = uniq("stream-tracking")
    c = connect(b.port)
    declare_stream(c.channel(), q)
    publish_each(c, q, bodies_of(8))
    r = tracking_reader(c, q, "keeper", offset="first")
    assert r.wait(8)
    ack_first(r, 5)
    c.close()
    b.restart()
    c = connect(b.port)
    try:
        again = tracking_reader(c, q, "keeper")
        assert again.wait(3)
        assert again.offsets() == [5, 6, 7]
    finally:
        c.close()


@pytest.mark.ours_only
def test_single_active_consumer_group_fails_over_from_the_group_offset(conn, connect_more, stream):
    publish_each(conn, stream, bodies_of(10))
    c1, c2 = connect_more(), connect_more()
    first = tracking_reader(c1, stream, "group-a", offset="first", prefetch=4, sac=True)
    second = tracking_reader(c2, stream, "group-a", offset="first", prefetch=4, sac=True)
    assert first.wait(4)
    second.settle()
    assert second.got == [], "a waiting member must not read"
    ack_first(first, 3)
    # the freed credit brings 3 more (taken in, so pika has none pending to nack at close)
    assert first.wait(7)
    # the active member goes: the next takes over after the group's last ack (offset 2)
    c1.close()
    assert second.wait(4)
    assert second.offsets()[0] == 3
    assert second.offsets() == [3, 4, 5, 6]


@pytest.mark.ours_only
def test_retention_by_age_drops_old_segments_without_new_publishes(conn, scratch):
    q = scratch.queue("stream-age")
    declare_stream(conn.channel(), q, **{"x-max-age": "1s", "x-stream-max-segment-size-bytes": 300})
    publish_each(conn, q, [b"x" * 100 for _ in range(10)])
    assert first_offsets(conn, q) == [0]
    # nothing is published any more: the age check alone drops the sealed segments
    deadline = time.monotonic() + 6
    first = [0]
    while time.monotonic() < deadline and first == [0]:
        pump_until(conn, lambda: False, 0.2)
        first = first_offsets(conn, q, timeout=1.0)
    assert first and first[0] > 0, first
    # the newest messages are still there, in order
    r = Reader(conn, q, "first", prefetch=20)
    assert r.wait(10 - first[0])
    assert r.offsets() == list(range(first[0], 10))
