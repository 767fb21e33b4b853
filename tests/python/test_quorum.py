"""Quorum queues (x-queue-type: quorum), as RabbitMQ 3.10 runs them: declare rules and
texts, delivery limit and x-delivery-count, dead-lettering with reason delivery_limit,
reject-publish and drop-head overflow, TTL, single active consumer, consumer priority,
basic.get, and where a requeued message goes.

Written and checked against the reference RabbitMQ 3.10 (AMQP_TEST_PORT=5673); our
broker serves quorum queues with one Raft group per queue (a group of one member).

Where RabbitMQ 4.x changed a default the tests accept both: x-delivery-limit defaults to
20 in 4.x (our choice) and to no limit in 3.10.
"""
import time

import pika
import pytest

from conftest import connect, get_n, pump_until, ready_count

QQ = {"x-queue-type": "quorum"}


def declare(ch, name, args=None, **flags):
    a = dict(QQ)
    a.update(args or {})
    flags.setdefault("durable", True)
    return ch.queue_declare(name, arguments=a, **flags)


def refusal(conn, name, args=None, **flags):
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        declare(ch, name, args, **flags)
    return e.value.reply_code, e.value.reply_text


# --------------------------------------------------------------------------- declare


def test_durable_only(conn, scratch):
    q = scratch.queue("qq")
    prop = lambda p: (406, f"PRECONDITION_FAILED - invalid property '{p}' for queue '{q}' in vhost '/'")
    assert refusal(conn, q, durable=False) == prop("non-durable")
    assert refusal(conn, q, exclusive=True) == prop("exclusive-owner")
    assert refusal(conn, q, auto_delete=True) == prop("auto-delete")
    assert refusal(conn, q, durable=False, exclusive=True, auto_delete=True) == prop("auto-delete")
    ch = conn.channel()
    assert declare(ch, q).method.queue == q


@pytest.mark.parametrize(
    "args,why",
    [
        ({"x-quorum-initial-group-size": 0}, "{value_zero,0}"),
        ({"x-quorum-initial-group-size": -1}, "{value_negative,-1}"),
        ({"x-max-length": -1}, "{value_negative,-1}"),
        ({"x-max-length-bytes": "x"}, '"expected integer, got longstr"'),
        ({"x-message-ttl": -1}, "{value_negative,-1}"),
        ({"x-expires": 0}, "{value_zero,0}"),
        ({"x-overflow": "nope"}, "invalid_overflow"),
        ({"x-dead-letter-strategy": "nope"}, "invalid_dlx_strategy"),
        ({"x-single-active-consumer": 1}, "{unacceptable_type,signedint}"),
        ({"x-queue-leader-locator": "nope"}, "invalid_queue_locator_arg"),
        ({"x-max-in-memory-length": -1}, "{value_negative,-1}"),
        ({"x-dead-letter-routing-key": "k"}, "routing_key_but_no_dlx_defined"),
        # values are checked in RabbitMQ's order, not the table's
        ({"x-max-length": -1, "x-message-ttl": -1}, None),
    ],
)
def test_bad_argument_values(conn, scratch, args, why):
    q = scratch.queue("qq")
    key = next(iter(args)) if why else "x-message-ttl"
    why = why or "{value_negative,-1}"
    assert refusal(conn, q, args) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/': {why}")


@pytest.mark.parametrize("key,value", [
    ("x-max-priority", 5), ("x-queue-mode", "lazy"), ("x-queue-master-locator", "min-masters"),
    ("x-max-age", "1D"), ("x-stream-max-segment-size-bytes", 100)])
def test_other_types_arguments_refused(conn, scratch, key, value):
    q = scratch.queue("qq")
    assert refusal(conn, q, {key: value}) == (
        406, f"PRECONDITION_FAILED - invalid arg '{key}' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue")


def test_accepted_arguments_and_redeclare(conn, scratch):
    q = scratch.queue("qq")
    ch = conn.channel()
    args = {
        "x-quorum-initial-group-size": 3, "x-delivery-limit": 5, "x-overflow": "reject-publish",
        "x-max-length": 10, "x-max-length-bytes": 1000, "x-message-ttl": 60000, "x-expires": 600000,
        "x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "k",
        "x-dead-letter-strategy": "at-most-once", "x-single-active-consumer": True,
        "x-queue-leader-locator": "balanced", "x-custom": 1,
    }
    declare(ch, q, args)
    declare(ch, q, args)
    # every queue leader locator RabbitMQ 3.10 takes (the last two: older names of balanced)
    for locator in ("client-local", "balanced", "random", "least-leaders"):
        other = scratch.queue("qq")
        declare(ch, other, {"x-queue-leader-locator": locator})
    changed = dict(args, **{"x-delivery-limit": 6})
    assert refusal(conn, q, changed) == (
        406, f"PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue '{q}' in vhost '/': "
        "received '6' but current is '5'")
    # arguments are compared in RabbitMQ's order: the dead-letter exchange before the type
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q, durable=True)
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue '{q}' in vhost '/': "
        "received none but current is the value 'dlx' of type 'longstr'")
    q2 = scratch.queue("qq")
    declare(conn.channel(), q2)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare(q2, durable=True)
    assert e.value.reply_text == (
        f"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{q2}' in vhost '/': "
        "received none but current is the value 'quorum' of type 'longstr'")


def test_global_qos_consumer_refused(broker, scratch):
    q = scratch.queue("qq")
    c = connect(broker)
    try:
        ch = c.channel()
        declare(ch, q)
        ch.basic_qos(prefetch_count=5, global_qos=True)
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
            ch.basic_consume(q, lambda *a: None)
        assert (e.value.reply_code, e.value.reply_text) == (
            540, f"NOT_IMPLEMENTED - queue '{q}' in vhost '/' does not support global qos")
    finally:
        if c.is_open:
            c.close()


# --------------------------------------------------------------------------- delivery


def test_basic_get_and_delivery_count(conn, scratch):
    q = scratch.queue("qq")
    ch = conn.channel()
    declare(ch, q)
    ch.basic_publish("", q, b"m")
    [(m, p, b)] = get_n(ch, q, 1, auto_ack=False)
    assert (b, m.redelivered, p.headers.get("x-delivery-count")) == (b"m", False, 0)
    ch.basic_nack(m.delivery_tag, requeue=True)
    [(m, p, b)] = get_n(ch, q, 1, auto_ack=False)
    assert (b, m.redelivered, p.headers.get("x-delivery-count")) == (b"m", True, 1)
    ch.basic_ack(m.delivery_tag)
    assert pump_until(conn, lambda: ready_count(ch, q) == 0)


def test_requeue_goes_to_the_back_close_goes_to_the_front(conn, connect_more, scratch):
    """A client's requeue puts the message behind the others (3.10's quorum queues); a
    closed channel's deliveries go back ahead of them, in order."""
    q = scratch.queue("qq")
    ch = conn.channel()
    declare(ch, q)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    got = get_n(ch, q, 3, auto_ack=False)
    ch.basic_reject(got[1][0].delivery_tag, requeue=True)
    ch.basic_reject(got[0][0].delivery_tag, requeue=True)
    rest = get_n(ch, q, 4, auto_ack=True)
    assert [(b, m.redelivered) for m, _, b in rest] == [
        (b"3", False), (b"4", False), (b"1", True), (b"0", True)]
    ch.basic_ack(got[2][0].delivery_tag)

    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    other = connect_more().channel()
    get_n(other, q, 3, auto_ack=False)
    other.close()
    after = get_n(ch, q, 5, auto_ack=True)
    assert [(b, m.redelivered, p.headers.get("x-delivery-count")) for m, p, b in after] == [
        (b"0", True, 1), (b"1", True, 1), (b"2", True, 1), (b"3", False, 0), (b"4", False, 0)]


def test_delivery_limit_dead_letters_with_reason_delivery_limit(conn, scratch):
    q, dlq = scratch.queue("qq"), scratch.queue("dlq")
    ch = conn.channel()
    ch.queue_declare(dlq, durable=True)
    declare(ch, q, {"x-delivery-limit": 1, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"poison")
    for count in (0, 1):
        [(m, p, _)] = get_n(ch, q, 1, auto_ack=False)
        assert p.headers.get("x-delivery-count") == count
        ch.basic_nack(m.delivery_tag, requeue=True)
    [(m, p, b)] = get_n(ch, dlq, 1)
    assert b == b"poison"
    death = p.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["count"]) == ("delivery_limit", q, 1)
    assert p.headers["x-first-death-reason"] == "delivery_limit"
    assert ready_count(ch, q) == 0


def test_without_delivery_limit_a_few_requeues_keep_the_message(conn, scratch):
    """3.10 has no default limit, 4.x (and we) 20: three requeues are fine in both."""
    q = scratch.queue("qq")
    ch = conn.channel()
    declare(ch, q)
    ch.basic_publish("", q, b"m")
    for _ in range(3):
        [(m, _, _)] = get_n(ch, q, 1, auto_ack=False)
        ch.basic_nack(m.delivery_tag, requeue=True)
    [(m, p, b)] = get_n(ch, q, 1)
    assert (b, p.headers.get("x-delivery-count")) == (b"m", 3)


def test_reject_publish_nacks_once_over_the_limit(conn, scratch):
    """The publish that takes the queue over x-max-length is confirmed; later ones are
    nacked."""
    q = scratch.queue("qq")
    ch = conn.channel()
    declare(ch, q, {"x-max-length": 2, "x-overflow": "reject-publish"})
    ch.confirm_delivery()
    outcome = []
    for i in range(4):
        try:
            ch.basic_publish("", q, str(i).encode())
            outcome.append("ack")
        except pika.exceptions.NackError:
            outcome.append("nack")
    assert outcome == ["ack", "ack", "ack", "nack"]
    assert [b for _, _, b in get_n(ch, q, 3)] == [b"0", b"1", b"2"]


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish-dlx"])
def test_drop_head_dead_letters_the_oldest(conn, scratch, overflow):
    """reject-publish-dlx behaves as drop-head on a quorum queue (3.10)."""
    q, dlq = scratch.queue("qq"), scratch.queue("dlq")
    ch = conn.channel()
    ch.queue_declare(dlq, durable=True)
    declare(ch, q, {"x-max-length": 2, "x-overflow": overflow,
                    "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.confirm_delivery()
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())
    dead = get_n(ch, dlq, 2)
    assert [(b, p.headers["x-death"][0]["reason"]) for _, p, b in dead] == [(b"0", "maxlen"), (b"1", "maxlen")]
    assert [b for _, _, b in get_n(ch, q, 2)] == [b"2", b"3"]


def test_message_ttl_and_per_message_expiration(conn, scratch):
    q, dlq = scratch.queue("qq"), scratch.queue("dlq")
    ch = conn.channel()
    ch.queue_declare(dlq, durable=True)
    declare(ch, q, {"x-message-ttl": 100, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
    ch.basic_publish("", q, b"queue-ttl")
    [(_, p, b)] = get_n(ch, dlq, 1)
    assert (b, p.headers["x-death"][0]["reason"]) == (b"queue-ttl", "expired")
    q2 = scratch.queue("qq")
    declare(ch, q2)
    ch.basic_publish("", q2, b"short", pika.BasicProperties(expiration="50"))
    ch.basic_publish("", q2, b"keeps")
    # the expired head goes as soon as the queue looks (on get) or its timer fires
    assert pump_until(conn, lambda: ready_count(ch, q2) == 1)
    assert [b for _, _, b in get_n(ch, q2, 1)] == [b"keeps"]


def collect(conn, ch, q, tag, out, **kw):
    ch.basic_consume(q, lambda c, m, p, b: out.append(b), consumer_tag=tag, **kw)


def test_consumer_priority(connect_more, scratch):
    q = scratch.queue("qq")
    c = connect_more()
    ch = c.channel()
    declare(ch, q)
    ch.basic_qos(prefetch_count=1)
    lo, hi = [], []
    collect(c, ch, q, "lo", lo)
    collect(c, ch, q, "hi", hi, arguments={"x-priority": 10})
    pub = connect_more().channel()
    for i in range(3):
        pub.basic_publish("", q, str(i).encode())
    assert pump_until(c, lambda: len(lo) + len(hi) == 2)
    assert (hi, lo) == ([b"0"], [b"1"])


def test_single_active_consumer_hands_over_on_cancel(connect_more, scratch):
    q = scratch.queue("qq")
    c = connect_more()
    ch = c.channel()
    declare(ch, q, {"x-single-active-consumer": True})
    a, b = [], []
    collect(c, ch, q, "a", a, auto_ack=True)
    # in 3.10 a higher priority does not take over an active consumer
    collect(c, ch, q, "b", b, auto_ack=True, arguments={"x-priority": 5})
    pub = connect_more().channel()
    pub.confirm_delivery()
    for i in range(3):
        pub.basic_publish("", q, str(i).encode())
    assert pump_until(c, lambda: len(a) == 3)
    ch.basic_cancel("a")
    for i in range(3, 5):
        pub.basic_publish("", q, str(i).encode())
    assert pump_until(c, lambda: len(b) == 2)
    assert (a, b) == ([b"0", b"1", b"2"], [b"3", b"4"])


def test_no_ack_consumer_and_exclusive_flag_ignored(connect_more, scratch):
    """3.10's quorum queues let a second consumer in after an exclusive one."""
    q = scratch.queue("qq")
    c = connect_more()
    ch = c.channel()
    declare(ch, q)
    got = []
    ch.basic_consume(q, lambda c_, m, p, b: got.append((b, (p.headers or {}).get("x-delivery-count"))),
                     auto_ack=True, exclusive=True)
    other = connect_more().channel()
    other.basic_consume(q, lambda *a: None, consumer_tag="second")
    other.basic_cancel("second")
    pub = connect_more().channel()
    for i in range(3):
        pub.basic_publish("", q, str(i).encode())
    assert pump_until(c, lambda: len(got) == 3)
    # a first delivery to a consumer carries no x-delivery-count
    assert got == [(b"0", None), (b"1", None), (b"2", None)]
