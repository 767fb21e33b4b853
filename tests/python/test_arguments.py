"""Queue, exchange and consumer arguments: validation on declare (RabbitMQ 3.10's exact
406 texts), x-message-ttl / per-message expiration, x-expires, x-max-length(-bytes) and
x-overflow, x-max-priority, x-single-active-consumer, consumer priorities (x-priority) and
alternate exchanges.

Timing: TTLs are 100-300 ms; waits poll (pump_until) instead of sleeping where they can.
Dead-lettering itself is in test_deadletter.py.
"""
import decimal
import time

import pika
import pytest
from pika.compat import long
from pika.exceptions import ChannelClosedByBroker, NackError, UnroutableError

from conftest import get_n, pump_until, ready_count, round_trip, uniq

VHOST = "vhost '/'"


def sync(ch):
    """A harmless synchronous method: everything sent before it has been processed."""
    ch.basic_qos(prefetch_count=0)


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


def confirming(conn):
    """A channel in confirm mode: each basic_publish returns once the queues have the
    message (RabbitMQ answers a passive queue.declare through another process, so without
    confirms its message_count can lag behind publishes made just before)."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def queue_exists(conn, q):
    ch = conn.channel()
    try:
        ch.queue_declare(q, passive=True)
    except ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
        return False
    ch.close()
    return True


def invalid_arg(q, arg, detail):
    return f"PRECONDITION_FAILED - invalid arg '{arg}' for queue '{q}' in {VHOST}: {detail}"


def drain(conn, ch, q, timeout=0.3):
    """basic.get (auto-ack) until the queue is empty; returns the bodies."""
    out = []
    while True:
        m, _, body = ch.basic_get(q, auto_ack=True)
        if m is None:
            return out
        out.append(body)


def pause(conn, seconds):
    """Waits while still servicing the connection (never sleeps more than asked)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        conn.process_data_events(time_limit=min(left, 0.05))


# =========================================================================== 1. validation

# (argument, value sent by pika, RabbitMQ's detail after "...in vhost '/': ").
# pika encodes small ints as 'I' (signedint), big ones and pika.compat.long as 'l' (long),
# str as 'S' (longstr), bytes as 'x' (binary), bool as 't', Decimal as 'D', None as 'V'.
INVALID = [
    ("x-message-ttl", -1, "{value_negative,-1}"),
    ("x-message-ttl", long(-5), "{value_negative,-5}"),
    ("x-message-ttl", "1000", '"expected integer, got longstr"'),
    ("x-message-ttl", True, '"expected integer, got bool"'),
    ("x-message-ttl", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    ("x-message-ttl", None, '"expected integer, got void"'),
    ("x-message-ttl", [1], '"expected integer, got array"'),
    ("x-message-ttl", {"a": 1}, '"expected integer, got table"'),
    ("x-message-ttl", 315360000001, "{value_too_large,315360000001}"),
    ("x-expires", 0, "{value_zero,0}"),
    ("x-expires", -1, "{value_negative,-1}"),
    ("x-expires", "abc", '"expected integer, got longstr"'),
    ("x-expires", True, '"expected integer, got bool"'),
    ("x-expires", decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    ("x-expires", 315360000001, "{value_too_large,315360000001}"),
    ("x-max-length", -1, "{value_negative,-1}"),
    ("x-max-length", "abc", '"expected integer, got longstr"'),
    ("x-max-length", True, '"expected integer, got bool"'),
    ("x-max-length-bytes", -1, "{value_negative,-1}"),
    ("x-max-length-bytes", "abc", '"expected integer, got longstr"'),
    ("x-max-length-bytes", True, '"expected integer, got bool"'),
    ("x-overflow", "foo", "invalid_overflow"),
    ("x-overflow", "Drop-Head", "invalid_overflow"),
    ("x-overflow", 1, "{unacceptable_type,signedint}"),
    ("x-overflow", b"drop-head", "{unacceptable_type,binary}"),
    ("x-max-priority", -1, "{value_negative,-1}"),
    ("x-max-priority", 256, "{max_value_exceeded,256}"),
    ("x-max-priority", "abc", '"expected integer, got longstr"'),
    ("x-max-priority", True, '"expected integer, got bool"'),
    ("x-single-active-consumer", "yes", "{unacceptable_type,longstr}"),
    ("x-single-active-consumer", "true", "{unacceptable_type,longstr}"),
    ("x-single-active-consumer", 1, "{unacceptable_type,signedint}"),
    ("x-single-active-consumer", long(1), "{unacceptable_type,long}"),
    ("x-dead-letter-routing-key", 1, "{unacceptable_type,signedint}"),
    ("x-queue-type", "foo", "\"unsupported queue type 'foo'\""),
    ("x-queue-type", "Classic", "\"unsupported queue type 'Classic'\""),
    ("x-queue-type", 1, "{unacceptable_type,signedint}"),
    ("x-queue-type", b"classic", "{unacceptable_type,binary}"),
]


@pytest.mark.parametrize("arg,value,detail", INVALID, ids=[f"{a}={v!r}" for a, v, _ in INVALID])
def test_406_invalid_queue_argument(conn, arg, value, detail):
    q = uniq("bad-arg")
    code, text = channel_error(conn, lambda ch: ch.queue_declare(q, arguments={arg: value}, exclusive=True))
    assert (code, text) == (406, invalid_arg(q, arg, detail))
    assert not queue_exists(conn, q), "a refused declare must not create the queue"


@pytest.mark.parametrize("value,type_name", [(1, "signedint"), (True, "bool"), (b"dlx", "binary")])
def test_406_dead_letter_exchange_of_wrong_type(conn, value, type_name):
    # x-dead-letter-exchange has its own wording
    q = uniq("bad-dlx")
    code, text = channel_error(
        conn, lambda ch: ch.queue_declare(q, arguments={"x-dead-letter-exchange": value}, exclusive=True))
    assert (code, text) == (
        406, f"PRECONDITION_FAILED - invalid type '{type_name}' for arg 'x-dead-letter-exchange' "
             f"in queue '{q}' in {VHOST}")
    assert not queue_exists(conn, q)


def test_406_dead_letter_routing_key_without_exchange(conn):
    q = uniq("dlrk-only")
    code, text = channel_error(
        conn, lambda ch: ch.queue_declare(q, arguments={"x-dead-letter-routing-key": "rk"}, exclusive=True))
    assert (code, text) == (406, invalid_arg(q, "x-dead-letter-routing-key", "routing_key_but_no_dlx_defined"))


def test_406_x_expires_is_checked_before_x_message_ttl(conn):
    # RabbitMQ checks arguments in a fixed order, not in table order
    q = uniq("two-bad")
    for args in ({"x-message-ttl": -1, "x-expires": 0}, {"x-expires": 0, "x-message-ttl": -1}):
        code, text = channel_error(conn, lambda ch: ch.queue_declare(q, arguments=args, exclusive=True))
        assert (code, text) == (406, invalid_arg(q, "x-expires", "{value_zero,0}"))


VALID = [
    ("x-message-ttl", 0),
    ("x-message-ttl", long(1000)),
    ("x-message-ttl", 2**32),
    ("x-message-ttl", 315360000000),  # ten years: the largest accepted
    ("x-expires", 1),
    ("x-expires", 315360000000),
    ("x-max-length", 0),
    ("x-max-length", 2**40),
    ("x-max-length-bytes", 0),
    ("x-max-length-bytes", 2**40),
    ("x-overflow", "drop-head"),
    ("x-overflow", "reject-publish"),
    ("x-overflow", "reject-publish-dlx"),
    ("x-max-priority", 0),
    ("x-max-priority", 255),
    ("x-max-priority", long(5)),
    ("x-single-active-consumer", True),
    ("x-single-active-consumer", False),
    ("x-dead-letter-exchange", ""),
    ("x-dead-letter-exchange", "no-such-exchange-needed"),
    ("x-queue-type", "classic"),
    ("x-unknown-argument", "ignored"),
]


@pytest.mark.parametrize("arg,value", VALID, ids=[f"{a}={v!r}" for a, v in VALID])
def test_valid_queue_argument_is_accepted(conn, arg, value):
    ch = conn.channel()
    q = uniq("good-arg")
    ok = ch.queue_declare(q, arguments={arg: value}, exclusive=True)
    assert (ok.method.queue, ok.method.message_count, ok.method.consumer_count) == (q, 0, 0)
    # redeclaring with the same arguments is fine, and so is a passive declare without any
    ch.queue_declare(q, arguments={arg: value}, exclusive=True)
    ch.queue_declare(q, passive=True)
    ch.queue_delete(q)


INEQUIVALENT = [
    ({"x-message-ttl": 1000}, {"x-message-ttl": 2000}, "x-message-ttl", "received '2000' but current is '1000'"),
    ({"x-message-ttl": 1000}, {"x-message-ttl": 2**40}, "x-message-ttl",
     "received '1099511627776' but current is '1000'"),
    # same digits, different type: still inequivalent, and the text does not say why
    ({"x-message-ttl": 1000}, {"x-message-ttl": "1000"}, "x-message-ttl", "received '1000' but current is '1000'"),
    ({"x-message-ttl": 1000}, {}, "x-message-ttl", "received none but current is the value '1000' of type 'signedint'"),
    ({}, {"x-message-ttl": 1000}, "x-message-ttl", "received the value '1000' of type 'signedint' but current is none"),
    ({}, {"x-message-ttl": long(1000)}, "x-message-ttl", "received the value '1000' of type 'long' but current is none"),
    ({"x-expires": 100000}, {"x-expires": 200000}, "x-expires", "received '200000' but current is '100000'"),
    ({"x-max-length": 10}, {"x-max-length": 11}, "x-max-length", "received '11' but current is '10'"),
    ({"x-max-length-bytes": 100}, {"x-max-length-bytes": 200}, "x-max-length-bytes",
     "received '200' but current is '100'"),
    ({"x-overflow": "drop-head"}, {"x-overflow": "reject-publish"}, "x-overflow",
     "received 'reject-publish' but current is 'drop-head'"),
    ({"x-max-priority": 5}, {"x-max-priority": 6}, "x-max-priority", "received '6' but current is '5'"),
    ({"x-single-active-consumer": True}, {"x-single-active-consumer": False}, "x-single-active-consumer",
     "received 'false' but current is 'true'"),
    ({"x-single-active-consumer": True}, {}, "x-single-active-consumer",
     "received none but current is the value 'true' of type 'bool'"),
    ({"x-dead-letter-exchange": "a"}, {"x-dead-letter-exchange": "b"}, "x-dead-letter-exchange",
     "received 'b' but current is 'a'"),
    ({"x-dead-letter-exchange": "a"}, {}, "x-dead-letter-exchange",
     "received none but current is the value 'a' of type 'longstr'"),
    ({"x-dead-letter-exchange": "a", "x-dead-letter-routing-key": "k1"},
     {"x-dead-letter-exchange": "a", "x-dead-letter-routing-key": "k2"}, "x-dead-letter-routing-key",
     "received 'k2' but current is 'k1'"),
]


@pytest.mark.parametrize("first,second,arg,detail", INEQUIVALENT, ids=[f"{a}-{i}" for i, (_, _, a, _) in enumerate(INEQUIVALENT)])
def test_406_redeclare_with_inequivalent_argument(conn, first, second, arg, detail):
    q = uniq("inequivalent")
    owner = conn.channel()
    owner.queue_declare(q, arguments=first, exclusive=True)
    code, text = channel_error(conn, lambda ch: ch.queue_declare(q, arguments=second, exclusive=True))
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg '{arg}' for queue '{q}' in {VHOST}: {detail}")
    owner.queue_delete(q)


def test_redeclare_equivalent_arguments_is_ok(conn):
    ch = conn.channel()
    q = uniq("equivalent")
    ch.queue_declare(q, arguments={"x-message-ttl": 1000, "x-max-length": 5}, exclusive=True)
    # the same integer as 'l' instead of 'I' is equivalent; so are other argument order and
    # unknown extra arguments; x-queue-type classic is the default
    ch.queue_declare(q, arguments={"x-max-length": long(5), "x-message-ttl": long(1000), "x-other": "x"}, exclusive=True)
    ch.queue_declare(q, arguments={"x-message-ttl": 1000, "x-max-length": 5, "x-queue-type": "classic"}, exclusive=True)
    ch.queue_delete(q)


# =========================================================================== 2. x-message-ttl


def test_queue_ttl_expires_messages_without_consumer(conn):
    ch = confirming(conn)
    q = uniq("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 200}, exclusive=True)
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    assert ready_count(ch, q) == 3
    # nobody fetches them: the count still drops to 0 on its own
    assert pump_until(conn, lambda: ready_count(ch, q) == 0, timeout=1.5)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)


def test_queue_ttl_message_is_delivered_before_expiry(conn):
    ch = conn.channel()
    q = uniq("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 300}, exclusive=True)
    ch.basic_publish("", q, b"fresh")
    (m, p, body), = get_n(ch, q, 1)
    assert body == b"fresh"
    assert p.expiration is None, "a queue TTL does not set the expiration property"


def test_expired_messages_are_not_returned_by_basic_get(conn):
    ch = conn.channel()
    q = uniq("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 150}, exclusive=True)
    ch.basic_publish("", q, b"old")
    pause(conn, 0.35)
    ch.basic_publish("", q, b"new")
    assert drain(conn, ch, q) == [b"new"]


def test_expired_messages_are_not_delivered_to_a_new_consumer(conn):
    ch = conn.channel()
    q = uniq("ttl")
    ch.queue_declare(q, arguments={"x-message-ttl": 150}, exclusive=True)
    ch.basic_publish("", q, b"old")
    pause(conn, 0.35)
    ch.basic_publish("", q, b"new")
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    assert pump_until(conn, lambda: got == [b"new"])
    pause(conn, 0.1)
    assert got == [b"new"]


def test_per_message_expiration(conn):
    ch = confirming(conn)
    q = uniq("expiration")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"short", pika.BasicProperties(expiration="150"))
    ch.basic_publish("", q, b"forever")
    ch.basic_publish("", q, b"long", pika.BasicProperties(expiration="60000"))
    assert ready_count(ch, q) == 3
    assert pump_until(conn, lambda: ready_count(ch, q) == 2, timeout=1.5)
    got = get_n(ch, q, 2)
    assert [b for _, _, b in got] == [b"forever", b"long"]
    # the expiration property is delivered as it was published
    assert [p.expiration for _, p, _ in got] == [None, "60000"]


def test_per_message_expiration_zero_without_consumer_is_dropped(conn):
    ch = conn.channel()
    q = uniq("expiration0")
    ch.queue_declare(q, exclusive=True)
    ch.basic_publish("", q, b"now or never", pika.BasicProperties(expiration="0"))
    ch.basic_publish("", q, b"kept")
    sync(ch)
    assert drain(conn, ch, q) == [b"kept"]


def test_smaller_of_queue_ttl_and_message_ttl_wins(conn):
    ch = confirming(conn)
    long_q, short_q = uniq("ttl-long"), uniq("ttl-short")
    ch.queue_declare(long_q, arguments={"x-message-ttl": 60000}, exclusive=True)
    ch.queue_declare(short_q, arguments={"x-message-ttl": 150}, exclusive=True)
    # queue TTL long, message TTL short -> the message's
    ch.basic_publish("", long_q, b"message ttl 150", pika.BasicProperties(expiration="150"))
    # queue TTL short, message TTL long -> the queue's
    ch.basic_publish("", short_q, b"message ttl 60000", pika.BasicProperties(expiration="60000"))
    assert ready_count(ch, long_q) == 1 and ready_count(ch, short_q) == 1
    assert pump_until(conn, lambda: ready_count(ch, long_q) == 0 and ready_count(ch, short_q) == 0, timeout=1.5)
    assert drain(conn, ch, long_q) == [] and drain(conn, ch, short_q) == []


def test_ttl_zero_with_consumer_delivers_immediately(conn):
    ch = conn.channel()
    q = uniq("ttl0")
    ch.queue_declare(q, arguments={"x-message-ttl": 0}, exclusive=True)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until(conn, lambda: len(got) == 3)
    assert got == [b"m0", b"m1", b"m2"]


def test_ttl_zero_without_consumer_drops(conn):
    ch = conn.channel()
    q = uniq("ttl0")
    ch.queue_declare(q, arguments={"x-message-ttl": 0}, exclusive=True)
    ch.basic_publish("", q, b"gone")
    sync(ch)
    assert ch.basic_get(q, auto_ack=True) == (None, None, None)
    assert ready_count(ch, q) == 0


def test_ttl_zero_with_consumer_without_prefetch_room_drops(conn):
    # a consumer that cannot take the message right now does not save it
    ch = conn.channel()
    q = uniq("ttl0")
    ch.queue_declare(q, arguments={"x-message-ttl": 0}, exclusive=True)
    ch.basic_qos(prefetch_count=1)
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append((m.delivery_tag, b)))
    ch.basic_publish("", q, b"first")
    assert pump_until(conn, lambda: len(got) == 1)
    ch.basic_publish("", q, b"second")
    sync(ch)
    pause(conn, 0.1)
    ch.basic_ack(got[0][0])
    pause(conn, 0.2)
    assert [b for _, b in got] == [b"first"]
    assert ready_count(ch, q) == 0


def test_requeued_message_keeps_its_original_expiry(conn):
    ch = conn.channel()
    q = uniq("ttl-requeue")
    ch.queue_declare(q, arguments={"x-message-ttl": 250}, exclusive=True)
    ch.basic_publish("", q, b"held")
    (m, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert body == b"held"
    # held (unacked) past its expiry: an unacked message does not expire...
    pause(conn, 0.5)
    ch.basic_publish("", q, b"fresh")
    # ...but once requeued it is already expired: it is not delivered again
    ch.basic_nack(m.delivery_tag, requeue=True)
    got = get_n(ch, q, 1)
    assert [(m.redelivered, b) for m, _, b in got] == [(False, b"fresh")]
    assert ch.basic_get(q) == (None, None, None)


def test_requeued_message_within_its_ttl_is_redelivered(conn):
    ch = conn.channel()
    q = uniq("ttl-requeue")
    ch.queue_declare(q, arguments={"x-message-ttl": 300}, exclusive=True)
    ch.basic_publish("", q, b"held")
    (m, _, _), = get_n(ch, q, 1, auto_ack=False)
    ch.basic_nack(m.delivery_tag, requeue=True)
    (m, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert (m.redelivered, body) == (True, b"held")
    pause(conn, 0.2)
    ch.basic_nack(m.delivery_tag, requeue=True)  # ~200 ms old: 100 ms left, not 300
    assert pump_until(conn, lambda: ready_count(ch, q) == 0, timeout=0.3)


# =========================================================================== 3. x-expires


# Every queue.declare, passive ones included, renews the lease (as does basic.get): these
# tests wait past the expiry without touching the queue, then look once.


def test_unused_queue_is_deleted_after_x_expires(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 200})
    ch.basic_publish("", q, b"does not keep it alive")
    assert queue_exists(conn, q)
    pause(conn, 0.45)
    code, text = channel_error(conn, lambda c: c.queue_declare(q, passive=True))
    assert (code, text) == (404, f"NOT_FOUND - no queue '{q}' in {VHOST}")


def test_queue_with_consumer_does_not_expire(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 150})
    ch.basic_consume(q, lambda *a: None, consumer_tag="keeper")
    pause(conn, 0.5)
    ok = ch.queue_declare(q, passive=True)
    assert ok.method.consumer_count == 1
    # once the consumer is gone, the lease runs out
    ch.basic_cancel("keeper")
    pause(conn, 0.4)
    assert not queue_exists(conn, q)


def test_redeclare_renews_x_expires(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 300})
    for _ in range(4):
        pause(conn, 0.15)
        ch.queue_declare(q, arguments={"x-expires": 300})
    pause(conn, 0.15)
    assert queue_exists(conn, q)  # 750 ms after the first declare
    pause(conn, 0.55)
    assert not queue_exists(conn, q)


def test_passive_declare_renews_x_expires(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 300})
    for _ in range(5):
        pause(conn, 0.15)
        assert queue_exists(conn, q)
    pause(conn, 0.55)
    assert not queue_exists(conn, q)


def test_basic_get_renews_x_expires(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("expires")
    ch.queue_declare(q, arguments={"x-expires": 300})
    for _ in range(5):
        pause(conn, 0.15)
        assert ch.basic_get(q) == (None, None, None)
    pause(conn, 0.55)
    assert not queue_exists(conn, q)


# =========================================================================== 4. max length


def test_max_length_drops_oldest(conn):
    ch = confirming(conn)
    q = uniq("maxlen")
    ch.queue_declare(q, arguments={"x-max-length": 3}, exclusive=True)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    assert ready_count(ch, q) == 3
    assert drain(conn, ch, q) == [b"m3", b"m4", b"m5"]


def test_max_length_zero_keeps_nothing(conn):
    ch = confirming(conn)
    q = uniq("maxlen0")
    ch.queue_declare(q, arguments={"x-max-length": 0}, exclusive=True)
    ch.basic_publish("", q, b"x")
    assert ready_count(ch, q) == 0
    assert drain(conn, ch, q) == []


def test_max_length_counts_ready_messages_only(conn):
    ch = confirming(conn)
    q = uniq("maxlen-unacked")
    ch.queue_declare(q, arguments={"x-max-length": 2}, exclusive=True)
    ch.basic_publish("", q, b"a")
    (m, _, _), = get_n(ch, q, 1, auto_ack=False)  # a: unacked, not counted
    for b in (b"b", b"c", b"d"):
        ch.basic_publish("", q, b)
    assert ready_count(ch, q) == 2
    ch.basic_nack(m.delivery_tag, requeue=True)  # a comes back at the head: 3 ready, oldest goes
    assert drain(conn, ch, q) == [b"c", b"d"]


def test_max_length_bytes_drops_oldest(conn):
    ch = confirming(conn)
    q = uniq("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10}, exclusive=True)
    for i in range(4):
        ch.basic_publish("", q, f"body{i}".encode())  # 5 bytes each
    assert ready_count(ch, q) == 2
    assert drain(conn, ch, q) == [b"body2", b"body3"]


def test_max_length_bytes_counts_bodies_only(conn):
    ch = confirming(conn)
    q = uniq("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10}, exclusive=True)
    props = pika.BasicProperties(headers={"big": "h" * 500}, content_type="text/plain")
    ch.basic_publish("", q, b"12345", props)
    ch.basic_publish("", q, b"67890", props)
    assert ready_count(ch, q) == 2
    ch.basic_publish("", q, b"!")
    assert drain(conn, ch, q) == [b"67890", b"!"]


def test_max_length_bytes_larger_message_than_limit_is_dropped(conn):
    ch = conn.channel()
    q = uniq("maxbytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 4}, exclusive=True)
    ch.basic_publish("", q, b"ok")
    ch.basic_publish("", q, b"too large")
    assert drain(conn, ch, q) == []


def test_max_length_and_max_length_bytes_together(conn):
    ch = confirming(conn)
    q = uniq("maxboth")
    ch.queue_declare(q, arguments={"x-max-length": 3, "x-max-length-bytes": 6}, exclusive=True)
    for b in (b"a", b"b", b"c", b"d"):  # length limit
        ch.basic_publish("", q, b)
    assert ready_count(ch, q) == 3
    ch.basic_publish("", q, b"eeeee")  # bytes limit: c+d+eeeee = 7 > 6 -> c goes too
    assert drain(conn, ch, q) == [b"d", b"eeeee"]


def test_reject_publish_without_confirms_drops_new(conn):
    ch = conn.channel()
    q = uniq("reject-publish")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}, exclusive=True)
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    sync(ch)
    assert ch.is_open
    assert ready_count(ch, q) == 2
    assert drain(conn, ch, q) == [b"m0", b"m1"]


def test_reject_publish_nacks_in_confirm_mode(conn):
    ch = conn.channel()
    q = uniq("reject-publish")
    ch.queue_declare(q, arguments={"x-max-length": 2, "x-overflow": "reject-publish"}, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"m0")
    ch.basic_publish("", q, b"m1")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"m2")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"m3", pika.BasicProperties(delivery_mode=2))
    assert ch.is_open
    assert ready_count(ch, q) == 2
    # room again after one is taken
    (m, _, body), = get_n(ch, q, 1)
    assert body == b"m0"
    ch.basic_publish("", q, b"m4")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"m5")
    assert drain(conn, ch, q) == [b"m1", b"m4"]


def test_reject_publish_with_max_length_bytes(conn):
    ch = conn.channel()
    q = uniq("reject-publish-bytes")
    ch.queue_declare(q, arguments={"x-max-length-bytes": 10, "x-overflow": "reject-publish"}, exclusive=True)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"12345")
    ch.basic_publish("", q, b"67890")
    with pytest.raises(NackError):
        ch.basic_publish("", q, b"x")
    assert drain(conn, ch, q) == [b"12345", b"67890"]


def test_reject_publish_nack_only_for_the_full_queue(conn):
    # fanout to a full reject-publish queue and to a normal one: the publisher gets a nack,
    # but the normal queue still gets its copy
    ch = conn.channel()
    full, normal = uniq("full"), uniq("normal")
    ch.queue_declare(full, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}, exclusive=True)
    ch.queue_declare(normal, exclusive=True)
    ch.queue_bind(full, "amq.fanout")
    ch.queue_bind(normal, "amq.fanout")
    ch.confirm_delivery()
    try:
        ch.basic_publish("amq.fanout", "", b"first")
        with pytest.raises(NackError):
            ch.basic_publish("amq.fanout", "", b"second")
        assert drain(conn, ch, full) == [b"first"]
        assert drain(conn, ch, normal) == [b"first", b"second"]
    finally:
        ch.queue_unbind(full, "amq.fanout")
        ch.queue_unbind(normal, "amq.fanout")


def test_drop_head_acks_in_confirm_mode(conn):
    ch = conn.channel()
    q = uniq("drop-head")
    ch.queue_declare(q, arguments={"x-max-length": 1, "x-overflow": "drop-head"}, exclusive=True)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())  # no NackError
    assert drain(conn, ch, q) == [b"m2"]


# =========================================================================== 5. x-max-priority


def publish_priorities(ch, q, items):
    for body, prio in items:
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    sync(ch)


def test_priority_order_fifo_within_priority_and_clamped_to_max(conn):
    ch = conn.channel()
    q = uniq("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 5}, exclusive=True)
    publish_priorities(ch, q, [
        (b"none-1", None), (b"p1", 1), (b"p5-a", 5), (b"p0", 0), (b"p3", 3),
        (b"p9", 9), (b"p5-b", 5), (b"none-2", None), (b"p255", 255),
    ])
    got = get_n(ch, q, 9)
    assert [b for _, _, b in got] == [
        b"p5-a", b"p9", b"p5-b", b"p255",  # 9 and 255 count as 5; FIFO among them
        b"p3", b"p1",
        b"none-1", b"p0", b"none-2",  # no priority is 0
    ]
    # the property itself is delivered as published
    assert [p.priority for _, p, _ in got] == [5, 9, 5, 255, 3, 1, None, 0, None]


def test_priority_with_consumer(conn):
    ch = conn.channel()
    q = uniq("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10}, exclusive=True)
    publish_priorities(ch, q, [(b"low", 1), (b"mid", 5), (b"high", 10), (b"mid-2", 5)])
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    assert pump_until(conn, lambda: len(got) == 4)
    assert got == [b"high", b"mid", b"mid-2", b"low"]


def test_priority_ignored_without_x_max_priority(conn):
    ch = conn.channel()
    q = uniq("no-prio")
    ch.queue_declare(q, exclusive=True)
    publish_priorities(ch, q, [(b"a", 1), (b"b", 9), (b"c", None), (b"d", 5)])
    assert drain(conn, ch, q) == [b"a", b"b", b"c", b"d"]


def test_priority_requeue_goes_back_in_priority_order(conn):
    ch = conn.channel()
    q = uniq("prio")
    ch.queue_declare(q, arguments={"x-max-priority": 10}, exclusive=True)
    publish_priorities(ch, q, [(b"p1", 1), (b"p7", 7)])
    taken = get_n(ch, q, 2, auto_ack=False)
    assert [b for _, _, b in taken] == [b"p7", b"p1"]
    publish_priorities(ch, q, [(b"p4", 4), (b"p7-later", 7), (b"p1-later", 1)])
    ch.basic_nack(taken[-1][0].delivery_tag, multiple=True, requeue=True)
    sync(ch)
    got = get_n(ch, q, 5)
    assert [(m.redelivered, b) for m, _, b in got] == [
        (True, b"p7"), (False, b"p7-later"), (False, b"p4"), (True, b"p1"), (False, b"p1-later")]


def test_priority_queue_with_max_length_drops_oldest_regardless_of_priority(conn):
    ch = confirming(conn)
    q = uniq("prio-maxlen")
    ch.queue_declare(q, arguments={"x-max-priority": 5, "x-max-length": 2}, exclusive=True)
    publish_priorities(ch, q, [(b"p1", 1), (b"p5", 5), (b"p3", 3)])
    assert ready_count(ch, q) == 2
    # RabbitMQ drops from the head of the priority order, i.e. the highest priority first
    assert drain(conn, ch, q) == [b"p3", b"p1"]


# =========================================================================== 6. single active consumer


def test_single_active_consumer(conn, connect_more):
    ch = conn.channel()
    q = uniq("sac")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True}, exclusive=False, auto_delete=True)
    other = connect_more()
    ch_a, ch_b = conn.channel(), other.channel()
    got_a, got_b = [], []
    ch_a.basic_consume(q, lambda c, m, p, b: got_a.append(b), auto_ack=True, consumer_tag="a")
    ch_b.basic_consume(q, lambda c, m, p, b: got_b.append(b), auto_ack=True, consumer_tag="b")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 2
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until([conn, other], lambda: len(got_a) == 4)
    pump_until([conn, other], lambda: False, timeout=0.1)
    assert (got_a, got_b) == ([b"m0", b"m1", b"m2", b"m3"], [])
    ch_a.basic_cancel("a")
    for i in range(4, 7):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until([conn, other], lambda: len(got_b) == 3)
    assert (got_a, got_b) == ([b"m0", b"m1", b"m2", b"m3"], [b"m4", b"m5", b"m6"])
    ch_b.basic_cancel("b")


def test_single_active_consumer_unacked_go_to_next_consumer(conn, connect_more):
    ch = conn.channel()
    q = uniq("sac")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True}, exclusive=False, auto_delete=True)
    other = connect_more()
    ch_a, ch_b = conn.channel(), other.channel()
    got_a, got_b = [], []
    ch_a.basic_consume(q, lambda c, m, p, b: got_a.append((m.redelivered, b)), consumer_tag="a")
    ch_b.basic_consume(q, lambda c, m, p, b: got_b.append((m.redelivered, b)), auto_ack=True, consumer_tag="b")
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until([conn, other], lambda: len(got_a) == 3)
    ch_a.close()  # unacked messages are requeued; b becomes the active consumer
    assert pump_until([conn, other], lambda: len(got_b) == 3)
    assert got_b == [(True, b"m0"), (True, b"m1"), (True, b"m2")]
    ch_b.basic_cancel("b")


def test_single_active_consumer_basic_get_still_works(conn):
    ch = conn.channel()
    q = uniq("sac")
    ch.queue_declare(q, arguments={"x-single-active-consumer": True}, exclusive=True)
    ch.basic_publish("", q, b"x")
    assert [b for _, _, b in get_n(ch, q, 1)] == [b"x"]


# =========================================================================== 7. consumer priority


def test_higher_priority_consumer_gets_everything_while_it_has_room(conn):
    ch = conn.channel()
    q = uniq("cprio")
    ch.queue_declare(q, exclusive=True)
    got = {"low": [], "high": [], "default": []}
    consumers = [("low", {"x-priority": 1}), ("high", {"x-priority": 10}), ("default", None)]
    for name, args in consumers:
        c = conn.channel()
        c.basic_consume(q, lambda c, m, p, b, name=name: got[name].append(b), auto_ack=True, arguments=args)
    for i in range(6):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until(conn, lambda: sum(map(len, got.values())) == 6)
    pause(conn, 0.05)
    assert got == {"low": [], "high": [f"m{i}".encode() for i in range(6)], "default": []}


def test_lower_priority_consumer_gets_messages_when_higher_is_full(conn):
    ch = confirming(conn)
    q = uniq("cprio")
    ch.queue_declare(q, exclusive=True)
    high, low = conn.channel(), conn.channel()
    high.basic_qos(prefetch_count=1)
    low.basic_qos(prefetch_count=1)
    got_high, got_low = [], []
    high.basic_consume(q, lambda c, m, p, b: got_high.append((m.delivery_tag, b)), arguments={"x-priority": 5})
    low.basic_consume(q, lambda c, m, p, b: got_low.append((m.delivery_tag, b)), arguments={"x-priority": -5})
    for i in range(3):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until(conn, lambda: len(got_high) == 1 and len(got_low) == 1)
    pause(conn, 0.1)
    assert ([b for _, b in got_high], [b for _, b in got_low]) == ([b"m0"], [b"m1"])
    assert ready_count(ch, q) == 1
    # the high-priority consumer has room again: it gets the next one
    high.basic_ack(got_high[0][0])
    assert pump_until(conn, lambda: len(got_high) == 2)
    assert [b for _, b in got_high] == [b"m0", b"m2"]
    assert [b for _, b in got_low] == [b"m1"]


def test_equal_priority_consumers_round_robin(conn):
    ch = conn.channel()
    q = uniq("cprio")
    ch.queue_declare(q, exclusive=True)
    got = {"a": [], "b": []}
    for name in ("a", "b"):
        conn.channel().basic_consume(q, lambda c, m, p, b, name=name: got[name].append(b), auto_ack=True,
                                     arguments={"x-priority": 3})
    conn.channel().basic_consume(q, lambda c, m, p, b: got.setdefault("low", []).append(b), auto_ack=True)
    for i in range(4):
        ch.basic_publish("", q, f"m{i}".encode())
    assert pump_until(conn, lambda: len(got["a"]) + len(got["b"]) == 4)
    assert got == {"a": [b"m0", b"m2"], "b": [b"m1", b"m3"]}


@pytest.mark.parametrize("value,detail", [
    ("high", '"expected integer, got longstr"'),
    (True, '"expected integer, got bool"'),
    (decimal.Decimal("1.5"), '"expected integer, got decimal"'),
    (None, '"expected integer, got void"'),
])
def test_406_invalid_consumer_priority(conn, value, detail):
    q = uniq("cprio-bad")
    conn.channel().queue_declare(q, exclusive=True)
    code, text = channel_error(conn, lambda ch: ch.basic_consume(q, lambda *a: None, arguments={"x-priority": value}))
    # the text names the queue, as for queue arguments
    assert (code, text) == (406, invalid_arg(q, "x-priority", detail))
    assert conn.channel().queue_declare(q, passive=True).method.consumer_count == 0


def test_consumer_priority_accepts_any_64_bit_integer(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i, value in enumerate([2**40, -(2**40), long(3), 0]):
        ch.basic_consume(q, lambda *a: None, arguments={"x-priority": value}, consumer_tag=f"c{i}")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 4


# =========================================================================== 8. alternate exchange


def test_alternate_exchange_gets_unroutable_messages(conn, scratch):
    ch = conn.channel()
    x, ae = scratch.exchange("main"), scratch.exchange("ae")
    main_q, ae_q = uniq("main-q"), uniq("ae-q")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(main_q, exclusive=True)
    ch.queue_declare(ae_q, exclusive=True)
    ch.queue_bind(main_q, x, "known")
    ch.queue_bind(ae_q, ae)
    ch.basic_publish(x, "known", b"routed")
    ch.basic_publish(x, "unknown", b"unroutable", pika.BasicProperties(message_id="u1"))
    assert [b for _, _, b in get_n(ch, main_q, 1)] == [b"routed"]
    (m, p, body), = get_n(ch, ae_q, 1)
    # delivered with the original exchange and routing key
    assert (m.exchange, m.routing_key, body, p.message_id) == (x, "unknown", b"unroutable", "u1")
    sync(ch)
    assert ready_count(ch, main_q) == 0 and ready_count(ch, ae_q) == 0


def test_alternate_exchange_routes_with_original_routing_key(conn, scratch):
    ch = conn.channel()
    x, ae = scratch.exchange("main"), scratch.exchange("ae")
    q1, q2 = uniq("ae-q1"), uniq("ae-q2")
    ch.exchange_declare(ae, "direct")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(q1, exclusive=True)
    ch.queue_declare(q2, exclusive=True)
    ch.queue_bind(q1, ae, "k1")
    ch.queue_bind(q2, ae, "k2")
    ch.basic_publish(x, "k2", b"to q2")
    assert [b for _, _, b in get_n(ch, q2, 1)] == [b"to q2"]
    assert ready_count(ch, q1) == 0


def test_mandatory_with_routing_alternate_exchange_is_not_returned(conn, scratch):
    ch = conn.channel()
    x, ae = scratch.exchange("main"), scratch.exchange("ae")
    ae_q = uniq("ae-q")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(ae_q, exclusive=True)
    ch.queue_bind(ae_q, ae)
    ch.confirm_delivery()
    ch.basic_publish(x, "unknown", b"saved by the AE", mandatory=True)  # no UnroutableError
    assert [b for _, _, b in get_n(ch, ae_q, 1)] == [b"saved by the AE"]


def test_mandatory_with_alternate_exchange_that_routes_nowhere_is_returned(conn, scratch):
    ch = conn.channel()
    x, ae = scratch.exchange("main"), scratch.exchange("ae")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish(x, "unknown", b"nowhere", mandatory=True)
    (r,) = ei.value.messages
    # returned as published to the original exchange
    assert (r.method.reply_code, r.method.reply_text, r.method.exchange, r.method.routing_key, r.body) == (
        312, "NO_ROUTE", x, "unknown", b"nowhere")


def test_missing_alternate_exchange_drops_or_returns(conn, scratch):
    ch = conn.channel()
    x = scratch.exchange("main")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": uniq("never-declared")})
    ch.confirm_delivery()
    ch.basic_publish(x, "unknown", b"dropped")
    with pytest.raises(UnroutableError):
        ch.basic_publish(x, "unknown", b"returned", mandatory=True)
    assert ch.is_open


def test_alternate_exchange_chain(conn, scratch):
    ch = conn.channel()
    x1, x2, x3 = scratch.exchange("chain1"), scratch.exchange("chain2"), scratch.exchange("chain3")
    q2, q3 = uniq("chain-q2"), uniq("chain-q3")
    ch.exchange_declare(x3, "fanout")
    ch.exchange_declare(x2, "direct", arguments={"alternate-exchange": x3})
    ch.exchange_declare(x1, "direct", arguments={"alternate-exchange": x2})
    ch.queue_declare(q2, exclusive=True)
    ch.queue_declare(q3, exclusive=True)
    ch.queue_bind(q2, x2, "for-x2")
    ch.queue_bind(q3, x3)
    ch.basic_publish(x1, "for-x2", b"stops at x2")
    ch.basic_publish(x1, "other", b"falls through to x3")
    (m2, _, b2), = get_n(ch, q2, 1)
    (m3, _, b3), = get_n(ch, q3, 1)
    assert (m2.exchange, b2) == (x1, b"stops at x2")
    assert (m3.exchange, m3.routing_key, b3) == (x1, "other", b"falls through to x3")
    sync(ch)
    assert ready_count(ch, q2) == 0 and ready_count(ch, q3) == 0


def test_alternate_exchange_cycle_does_not_loop(conn, scratch):
    ch = conn.channel()
    x1, x2 = scratch.exchange("cycle1"), scratch.exchange("cycle2")
    ch.exchange_declare(x1, "direct", arguments={"alternate-exchange": x2})
    ch.exchange_declare(x2, "direct", arguments={"alternate-exchange": x1})
    q = uniq("cycle-q")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, x2, "x2-key")
    ch.confirm_delivery()
    with pytest.raises(UnroutableError):
        ch.basic_publish(x1, "nothing", b"round and round", mandatory=True)
    ch.basic_publish(x1, "x2-key", b"found in x2", mandatory=True)
    assert [b for _, _, b in get_n(ch, q, 1)] == [b"found in x2"]
    assert ch.is_open


@pytest.mark.parametrize("value,type_name", [(42, "signedint"), (b"ae", "binary"), (True, "bool")])
def test_406_alternate_exchange_of_wrong_type(conn, scratch, value, type_name):
    x = scratch.exchange("bad-ae")
    code, text = channel_error(conn, lambda ch: ch.exchange_declare(x, "direct", arguments={"alternate-exchange": value}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - invalid type '{type_name}' for arg 'alternate-exchange' "
                                 f"in exchange '{x}' in {VHOST}")
    code, text = channel_error(conn, lambda ch: ch.exchange_declare(x, passive=True))
    assert (code, text) == (404, f"NOT_FOUND - no exchange '{x}' in {VHOST}")


def test_406_redeclare_exchange_with_different_alternate_exchange(conn, scratch):
    x = scratch.exchange("ae-redeclare")
    conn.channel().exchange_declare(x, "direct", arguments={"alternate-exchange": "ae1"})
    code, text = channel_error(conn, lambda ch: ch.exchange_declare(x, "direct", arguments={"alternate-exchange": "ae2"}))
    assert (code, text) == (406, f"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' "
                                 f"in {VHOST}: received 'ae2' but current is 'ae1'")


# =========================================================================== ours_only


def test_queue_type_classic_and_quorum_accepted_unknown_refused(conn, scratch):
    ch = conn.channel()
    q = scratch.queue("classic")
    ch.queue_declare(q, durable=True, arguments={"x-queue-type": "classic"})
    qq = scratch.queue("quorum")
    ch.queue_declare(qq, durable=True, arguments={"x-queue-type": "quorum"})
    assert queue_exists(conn, qq)
    name = scratch.queue("fast")
    code, text = channel_error(
        conn, lambda c: c.queue_declare(name, durable=True, arguments={"x-queue-type": "fast"}))
    assert code == 406 and text.startswith("PRECONDITION_FAILED - "), (code, text)
    assert "unsupported queue type 'fast'" in text, text
    assert not queue_exists(conn, name)


@pytest.mark.ours_only
@pytest.mark.parametrize("value", [-1, long(-1), "2", True, decimal.Decimal("1.5")])
def test_406_invalid_delivery_limit(conn, value):
    q = uniq("bad-limit")
    code, text = channel_error(
        conn, lambda ch: ch.queue_declare(q, arguments={"x-delivery-limit": value}, exclusive=True))
    assert code == 406
    assert text.startswith(f"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue '{q}' in {VHOST}"), text
    assert not queue_exists(conn, q)


@pytest.mark.ours_only
@pytest.mark.parametrize("value", [0, 1, long(20)])
def test_valid_delivery_limit_on_classic_queue(conn, value):
    ch = conn.channel()
    q = uniq("limit")
    ch.queue_declare(q, arguments={"x-delivery-limit": value}, exclusive=True)
    ch.queue_declare(q, arguments={"x-delivery-limit": value}, exclusive=True)
    ch.queue_delete(q)
