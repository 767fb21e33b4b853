"""Error cases with RabbitMQ's exact reply codes and texts, and the message-level
behaviours around them (returns, cancels, requeues, confirms, tx, properties, big bodies).

A channel error closes only that channel: every channel-error test checks that a channel
opened before the error and a new channel on the same connection both still work. A
connection error closes the connection: those tests check that another connection, open
all along, and a new connection both still work.

The expected texts are what RabbitMQ 3.10 sends.
"""
import datetime
import decimal
import random
import struct

import pika
import pika.data
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker, UnroutableError

from conftest import get_n, pump_until, ready_count, round_trip, uniq

VHOST = "vhost '/'"
LOCKED = (
    "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. "
    "It could be originally declared on another connection or the exclusive property value "
    "does not match that of the original declaration."
)


def sync(ch):
    """A harmless synchronous method: makes an asynchronous error (after basic.publish,
    basic.ack, ...) surface as an exception in the test."""
    ch.basic_qos(prefetch_count=0)


def expect_channel_error(conn, action, code, text=None, prefix=None):
    bystander = conn.channel()
    round_trip(bystander)
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        action(ch)
        sync(ch)
    err = ei.value
    assert err.reply_code == code, (err.reply_code, err.reply_text)
    if text is not None:
        assert err.reply_text == text
    if prefix is not None:
        assert err.reply_text.startswith(prefix), err.reply_text
    assert ch.is_closed
    # only the channel is gone
    assert conn.is_open
    round_trip(bystander)
    round_trip(conn)
    return err.reply_text


def expect_connection_error(conn, connect_more, action, code, text=None):
    round_trip(conn)
    victim = connect_more()
    ch = victim.channel()
    with pytest.raises(ConnectionClosedByBroker) as ei:
        action(ch)
        sync(ch)
    err = ei.value
    assert (err.reply_code, err.reply_text if text is not None else None) == (code, text)
    assert victim.is_closed
    # other connections are unaffected, new ones are accepted
    round_trip(conn)
    round_trip(connect_more())
    return err.reply_text


# --------------------------------------------------------------------------- 404 / 406 / 405 / 403


def test_404_passive_declare_of_missing_queue(conn):
    q = uniq("missing")
    expect_channel_error(conn, lambda ch: ch.queue_declare(q, passive=True),
                         404, f"NOT_FOUND - no queue '{q}' in {VHOST}")


def test_404_passive_declare_of_missing_exchange(conn):
    x = uniq("missing-x")
    expect_channel_error(conn, lambda ch: ch.exchange_declare(x, passive=True),
                         404, f"NOT_FOUND - no exchange '{x}' in {VHOST}")


@pytest.mark.parametrize("first,second", [(False, True), (True, False)])
def test_406_redeclare_queue_with_different_durable(conn, first, second):
    q = uniq("redeclare")
    conn.channel().queue_declare(q, durable=first)
    expect_channel_error(
        conn, lambda ch: ch.queue_declare(q, durable=second), 406,
        f"PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in {VHOST}: "
        f"received '{str(second).lower()}' but current is '{str(first).lower()}'",
    )
    conn.channel().queue_delete(q)


def test_406_redeclare_exchange_with_different_type(conn):
    x = uniq("redeclare-x")
    conn.channel().exchange_declare(x, "direct", auto_delete=True)
    expect_channel_error(
        conn, lambda ch: ch.exchange_declare(x, "fanout", auto_delete=True), 406,
        f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{x}' in {VHOST}: "
        "received 'fanout' but current is 'direct'",
    )
    conn.channel().exchange_delete(x)


EXCLUSIVE_USES = {
    "basic.consume": lambda ch, q: ch.basic_consume(q, lambda *a: None),
    "basic.get": lambda ch, q: ch.basic_get(q),
    "queue.declare": lambda ch, q: ch.queue_declare(q, exclusive=True),
    "queue.declare non-exclusive": lambda ch, q: ch.queue_declare(q),
    "queue.declare passive": lambda ch, q: ch.queue_declare(q, passive=True),
    "queue.purge": lambda ch, q: ch.queue_purge(q),
    "queue.delete": lambda ch, q: ch.queue_delete(q),
    "queue.bind": lambda ch, q: ch.queue_bind(q, "amq.direct", "k"),
}


@pytest.mark.parametrize("use", list(EXCLUSIVE_USES))
def test_405_exclusive_queue_used_from_another_connection(conn, connect_more, use):
    q = uniq("exclusive")
    owner = conn.channel()
    owner.queue_declare(q, exclusive=True)
    owner.basic_publish("", q, b"still here")
    other = connect_more()
    expect_channel_error(other, lambda ch: EXCLUSIVE_USES[use](ch, q), 405, LOCKED.format(q=q))
    # the owner is unaffected and the queue and its message are intact
    (m, _, body), = get_n(owner, q, 1)
    assert body == b"still here"


def test_405_unbind_of_exclusive_queue_from_another_connection(conn, connect_more):
    q = uniq("exclusive")
    owner = conn.channel()
    owner.queue_declare(q, exclusive=True)
    owner.queue_bind(q, "amq.direct", q)
    expect_channel_error(connect_more(), lambda ch: ch.queue_unbind(q, "amq.direct", q), 405, LOCKED.format(q=q))
    # the binding survived
    owner.basic_publish("amq.direct", q, b"routed")
    assert [b for _, _, b in get_n(owner, q, 1)] == [b"routed"]


def test_publish_to_exclusive_queue_of_another_connection_is_allowed(conn, connect_more):
    q = uniq("exclusive")
    owner = conn.channel()
    owner.queue_declare(q, exclusive=True)
    other = connect_more().channel()
    other.basic_publish("", q, b"from outside")
    sync(other)
    assert [b for _, _, b in get_n(owner, q, 1)] == [b"from outside"]


def test_403_declare_exchange_with_amq_prefix(conn):
    expect_channel_error(conn, lambda ch: ch.exchange_declare("amq.foo", "direct"), 403,
                         "ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'")


def test_403_declare_queue_with_amq_prefix(conn):
    expect_channel_error(conn, lambda ch: ch.queue_declare("amq.gen-foo"), 403,
                         "ACCESS_REFUSED - queue name 'amq.gen-foo' contains reserved prefix 'amq.*'")


def test_redeclare_builtin_exchange_is_allowed(conn):
    ch = conn.channel()
    ch.exchange_declare("amq.direct", "direct", durable=True)
    ch.exchange_declare("amq.topic", passive=True)
    round_trip(ch)


def test_503_unknown_exchange_type_closes_connection(conn, connect_more):
    x = uniq("weird")
    expect_connection_error(conn, connect_more, lambda ch: ch.exchange_declare(x, "x-nope"), 503,
                            "COMMAND_INVALID - unknown exchange type 'x-nope'")
    # and nothing was declared
    expect_channel_error(conn, lambda ch: ch.exchange_declare(x, passive=True), 404)


def test_404_publish_to_missing_exchange(conn):
    x = uniq("no-such-exchange")
    expect_channel_error(conn, lambda ch: ch.basic_publish(x, "k", b"x"), 404,
                         f"NOT_FOUND - no exchange '{x}' in {VHOST}")


@pytest.mark.parametrize("what", ["queue.bind", "basic.consume", "basic.get", "queue.purge"])
def test_404_missing_queue(conn, what):
    q = uniq("missing")
    action = {
        "queue.bind": lambda ch: ch.queue_bind(q, "amq.direct", "k"),
        "basic.consume": lambda ch: ch.basic_consume(q, lambda *a: None),
        "basic.get": lambda ch: ch.basic_get(q),
        "queue.purge": lambda ch: ch.queue_purge(q),
    }[what]
    expect_channel_error(conn, action, 404, f"NOT_FOUND - no queue '{q}' in {VHOST}")


def test_404_bind_to_missing_exchange(conn):
    x = uniq("missing-x")

    def action(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.queue_bind(q, x, "k")

    expect_channel_error(conn, action, 404, f"NOT_FOUND - no exchange '{x}' in {VHOST}")


def test_delete_of_missing_queue_and_exchange_is_ok(conn):
    ch = conn.channel()
    assert ch.queue_delete(uniq("never-declared")).method.message_count == 0
    ch.exchange_delete(uniq("never-declared-x"))
    round_trip(ch)


def test_exchange_unbind_from_an_auto_deleted_destination_is_ok(conn):
    """aio-pika's teardown: an auto-delete exchange goes with its last binding (as a
    source); unbinding it afterwards from the exchange it was bound to answers unbind-ok,
    as RabbitMQ does, and leaves the channel open."""
    ch = conn.channel()
    src, dst = uniq("unbind-src"), uniq("unbind-dst")
    ch.exchange_declare(src, "direct", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.exchange_bind(dst, src, "k")
    ch.queue_bind(q, dst)
    ch.queue_unbind(q, dst)
    # dst had only that binding as a source: it is gone
    assert channel_closed_with(conn, lambda c: c.exchange_declare(dst, passive=True))[0] == 404
    ch.exchange_unbind(dst, src, "k")
    round_trip(ch)
    assert ch.is_open


@pytest.mark.parametrize("which", ["source", "destination", "both"])
def test_exchange_unbind_with_a_missing_exchange_is_ok(conn, which):
    ch = conn.channel()
    src, dst = uniq("unbind-src"), uniq("unbind-dst")
    if which not in ("source", "both"):
        ch.exchange_declare(src, "direct", auto_delete=True)
    if which not in ("destination", "both"):
        ch.exchange_declare(dst, "direct", auto_delete=True)
    ch.exchange_unbind(dst, src, "k")
    round_trip(ch)
    assert ch.is_open
    for x in (src, dst):
        ch.exchange_delete(x)


@pytest.mark.parametrize("side", ["source", "destination"])
def test_403_exchange_unbind_with_the_default_exchange_even_if_the_other_is_missing(conn, side):
    other = uniq("unbind-missing")
    src, dst = ("", other) if side == "source" else (other, "")
    expect_channel_error(conn, lambda ch: ch.exchange_unbind(dst, src, "k"), 403,
                         "ACCESS_REFUSED - operation not permitted on the default exchange")


@pytest.mark.parametrize("missing", ["queue", "exchange", "both", "binding"])
def test_queue_unbind_of_what_does_not_exist_is_ok(conn, missing):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue if missing in ("exchange", "binding") else uniq("no-q")
    x = uniq("no-x")
    if missing in ("queue", "binding"):
        ch.exchange_declare(x, "direct", auto_delete=True)
    ch.queue_unbind(q, x, "never-bound")
    round_trip(ch)
    assert ch.is_open
    ch.exchange_delete(x)


def channel_closed_with(conn, action):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as ei:
        action(ch)
    return ei.value.reply_code, ei.value.reply_text


# --------------------------------------------------------------------------- acks


def test_406_ack_unknown_delivery_tag(conn):
    expect_channel_error(conn, lambda ch: ch.basic_ack(42), 406, "PRECONDITION_FAILED - unknown delivery tag 42")


@pytest.mark.parametrize("how", ["nack", "reject", "ack multiple"])
def test_406_nack_reject_unknown_delivery_tag(conn, how):
    action = {
        "nack": lambda ch: ch.basic_nack(42),
        "reject": lambda ch: ch.basic_reject(42),
        "ack multiple": lambda ch: ch.basic_ack(42, multiple=True),
    }[how]
    expect_channel_error(conn, action, 406, "PRECONDITION_FAILED - unknown delivery tag 42")


def test_406_double_ack(conn):
    def action(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"x")
        (m, _, _), = get_n(ch, q, 1, auto_ack=False)
        assert m.delivery_tag == 1
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)

    expect_channel_error(conn, action, 406, "PRECONDITION_FAILED - unknown delivery tag 1")


def test_406_ack_of_auto_acked_delivery(conn):
    def action(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"x")
        (m, _, _), = get_n(ch, q, 1, auto_ack=True)
        ch.basic_ack(m.delivery_tag)

    expect_channel_error(conn, action, 406, "PRECONDITION_FAILED - unknown delivery tag 1")


MAX_TAG = 2**64 - 1


def three_unacked(ch):
    """An exclusive queue with three messages fetched and not acked (tags 1, 2, 3)."""
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    got = get_n(ch, q, 3, auto_ack=False)
    assert [m.delivery_tag for m, _, _ in got] == [1, 2, 3]
    return q


@pytest.mark.parametrize("settle", [
    lambda ch, tag: ch.basic_ack(tag, multiple=True),
    lambda ch, tag: ch.basic_nack(tag, multiple=True, requeue=True),
    lambda ch, tag: ch.basic_nack(tag, multiple=True, requeue=False),
], ids=["ack", "nack-requeue", "nack-discard"])
@pytest.mark.parametrize("tag", [MAX_TAG, 10])
def test_406_multiple_settle_past_the_last_tag_settles_nothing(conn, settle, tag):
    """As RabbitMQ: a multiple settle must name a tag awaiting ack; the largest tag (no
    wrap-around) or one past the last delivery closes the channel with 406, and the three
    deliveries go back to the queue unsettled."""
    holder = {}

    def action(ch):
        holder["q"] = three_unacked(ch)
        settle(ch, tag)

    expect_channel_error(conn, action, 406, f"PRECONDITION_FAILED - unknown delivery tag {tag}")
    ch = conn.channel()
    assert ready_count(ch, holder["q"]) == 3


def test_406_multiple_ack_of_an_already_acked_tag(conn):
    """RabbitMQ refuses ack(2, multiple) once 2 is acked, though 1 still awaits ack."""
    holder = {}

    def action(ch):
        holder["q"] = three_unacked(ch)
        ch.basic_ack(2)
        ch.basic_ack(2, multiple=True)

    expect_channel_error(conn, action, 406, "PRECONDITION_FAILED - unknown delivery tag 2")
    assert ready_count(conn.channel(), holder["q"]) == 2


def test_406_ack_of_tag_zero_without_multiple(conn):
    expect_channel_error(conn, lambda ch: (three_unacked(ch), ch.basic_ack(0)), 406,
                         "PRECONDITION_FAILED - unknown delivery tag 0")


def test_ack_multiple_zero_with_nothing_outstanding_is_ok(conn):
    ch = conn.channel()
    ch.basic_ack(0, multiple=True)
    sync(ch)
    round_trip(ch)


# --------------------------------------------------------------------------- 540 connection errors


def test_540_qos_prefetch_size(conn, connect_more):
    expect_connection_error(conn, connect_more, lambda ch: ch.basic_qos(prefetch_size=10), 540,
                            "NOT_IMPLEMENTED - prefetch_size!=0 (10)")


def test_540_channel_flow_false(conn, connect_more):
    expect_connection_error(conn, connect_more, lambda ch: ch.flow(False), 540, "NOT_IMPLEMENTED - active=false")


def test_channel_flow_true_is_ok(conn):
    ch = conn.channel()
    assert ch.flow(True) is True
    round_trip(ch)


def test_540_basic_recover_without_requeue(conn, connect_more):
    expect_connection_error(conn, connect_more, lambda ch: ch.basic_recover(requeue=False), 540,
                            "NOT_IMPLEMENTED - requeue=false")


def test_basic_recover_with_requeue_redelivers(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"again")
    (m, _, _), = get_n(ch, q, 1, auto_ack=False)
    assert m.redelivered is False
    ch.basic_recover(requeue=True)
    (m, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert (body, m.redelivered) == (b"again", True)
    ch.basic_ack(m.delivery_tag)


# --------------------------------------------------------------------------- tx / default exchange / deletes


@pytest.mark.parametrize("method", ["tx_commit", "tx_rollback"])
def test_406_tx_without_select(conn, method):
    expect_channel_error(conn, lambda ch: getattr(ch, method)(), 406,
                         "PRECONDITION_FAILED - channel is not transactional")


@pytest.mark.parametrize("op", ["queue_bind", "queue_unbind"])
def test_403_bind_to_default_exchange(conn, op):
    def action(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        getattr(ch, op)(q, "", "k")

    expect_channel_error(conn, action, 403, "ACCESS_REFUSED - operation not permitted on the default exchange")


@pytest.mark.parametrize("op", ["declare", "delete"])
def test_403_declare_or_delete_default_exchange(conn, op):
    action = (lambda ch: ch.exchange_declare("", "direct")) if op == "declare" else (lambda ch: ch.exchange_delete(""))
    expect_channel_error(conn, action, 403, "ACCESS_REFUSED - operation not permitted on the default exchange")


def test_403_delete_amq_direct(conn):
    expect_channel_error(conn, lambda ch: ch.exchange_delete("amq.direct"), 403,
                         f"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in {VHOST} not allowed")
    # still there, still routing
    ch = conn.channel()
    ch.exchange_declare("amq.direct", passive=True)
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, "amq.direct", q)
    ch.basic_publish("amq.direct", q, b"ok")
    assert [b for _, _, b in get_n(ch, q, 1)] == [b"ok"]


def test_406_delete_queue_if_empty_on_non_empty_queue(conn):
    q = uniq("full")
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_publish("", q, b"x")
    assert pump_until(conn, lambda: ready_count(ch, q) == 1)
    expect_channel_error(conn, lambda c: c.queue_delete(q, if_empty=True), 406,
                         f"PRECONDITION_FAILED - queue '{q}' in {VHOST} not empty")
    # nothing was deleted
    assert ready_count(ch, q) == 1
    assert ch.queue_delete(q).method.message_count == 1


def test_406_delete_queue_if_unused_with_consumer(conn):
    q = uniq("used")
    ch = conn.channel()
    ch.queue_declare(q)
    ch.basic_consume(q, lambda *a: None, consumer_tag="keeps-it-busy")
    expect_channel_error(conn, lambda c: c.queue_delete(q, if_unused=True), 406,
                         f"PRECONDITION_FAILED - queue '{q}' in {VHOST} in use")
    assert ch.queue_declare(q, passive=True).method.consumer_count == 1
    ch.basic_cancel("keeps-it-busy")
    ch.queue_delete(q, if_unused=True)
    expect_channel_error(conn, lambda c: c.queue_declare(q, passive=True), 404)


def test_406_delete_exchange_if_unused_with_binding(conn):
    x = uniq("bound-x")
    ch = conn.channel()
    ch.exchange_declare(x, "direct")
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q, x, "k")
    expect_channel_error(conn, lambda c: c.exchange_delete(x, if_unused=True), 406,
                         f"PRECONDITION_FAILED - exchange '{x}' in {VHOST} in use")
    ch.exchange_delete(x)


def test_406_user_id_other_than_authenticated_user(conn):
    expect_channel_error(
        conn, lambda ch: ch.basic_publish("", "anything", b"x", pika.BasicProperties(user_id="bob")), 406,
        "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'")


def test_406_invalid_expiration(conn):
    expect_channel_error(
        conn, lambda ch: ch.basic_publish("", "anything", b"x", pika.BasicProperties(expiration="abc")), 406,
        prefix="PRECONDITION_FAILED - invalid expiration 'abc'")


# --------------------------------------------------------------------------- returns and cancels


def test_mandatory_unroutable_is_returned_with_312_no_route(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method, props, body)))
    q = uniq("nobody-home")
    ch.basic_publish("", q, b"back to sender", pika.BasicProperties(message_id="m-1"), mandatory=True)
    x = uniq("no-bindings")
    ch.exchange_declare(x, "direct", auto_delete=False)
    ch.basic_publish(x, "nothing-bound", b"also back", mandatory=True)
    # not mandatory: silently dropped
    ch.basic_publish(x, "nothing-bound", b"dropped")
    assert pump_until(conn, lambda: len(returned) >= 2)
    sync(ch)  # anything more would have arrived before this answer
    conn.process_data_events(time_limit=0)
    assert [(m.reply_code, m.reply_text, m.exchange, m.routing_key, b) for m, _, b in returned] == [
        (312, "NO_ROUTE", "", q, b"back to sender"),
        (312, "NO_ROUTE", x, "nothing-bound", b"also back"),
    ]
    assert returned[0][1].message_id == "m-1"
    assert ch.is_open
    ch.exchange_delete(x)


def test_mandatory_routable_is_not_returned(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda *a: returned.append(a))
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"x", mandatory=True)
    assert [b for _, _, b in get_n(ch, q, 1)] == [b"x"]
    sync(ch)
    assert returned == []


def test_consumer_of_deleted_queue_gets_basic_cancel(conn, connect_more):
    q = uniq("doomed")
    ch = conn.channel()
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume(q, lambda *a: None, consumer_tag="watcher")
    other = connect_more().channel()
    other.queue_delete(q)
    assert pump_until(conn, lambda: cancelled == ["watcher"]), cancelled
    # the channel stays open and usable
    assert ch.is_open
    round_trip(ch)


# --------------------------------------------------------------------------- requeue / redelivery


def test_unacked_messages_return_redelivered_when_channel_closes(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(5):
        ch.basic_publish("", q, str(i).encode())
    consumer = conn.channel()
    got = []
    consumer.basic_consume(q, lambda c, m, p, b: got.append((m.redelivered, b)))
    assert pump_until(conn, lambda: len(got) == 5)
    assert got == [(False, str(i).encode()) for i in range(5)]
    assert ready_count(ch, q) == 0
    consumer.close()
    again = get_n(ch, q, 5)
    # back in their original order, flagged redelivered
    assert [(m.redelivered, b) for m, _, b in again] == [(True, str(i).encode()) for i in range(5)]
    assert ready_count(ch, q) == 0


def test_unacked_messages_return_in_place_among_ready_ones(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(4):
        ch.basic_publish("", q, str(i).encode())
    taker = conn.channel()
    first_two = get_n(taker, q, 2, auto_ack=False)
    assert [b for _, _, b in first_two] == [b"0", b"1"]
    taker.close()
    assert [(m.redelivered, b) for m, _, b in get_n(ch, q, 4)] == [
        (True, b"0"), (True, b"1"), (False, b"2"), (False, b"3")]


def test_nack_with_requeue_redelivers(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"m")
    (m, _, _), = get_n(ch, q, 1, auto_ack=False)
    assert m.redelivered is False
    ch.basic_nack(m.delivery_tag, requeue=True)
    (m2, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert (body, m2.redelivered) == (b"m", True)
    assert m2.delivery_tag == m.delivery_tag + 1
    ch.basic_ack(m2.delivery_tag)
    sync(ch)
    assert ready_count(ch, q) == 0


def test_nack_multiple_with_requeue(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    got = get_n(ch, q, 3, auto_ack=False)
    ch.basic_nack(got[-1][0].delivery_tag, multiple=True, requeue=True)
    assert [(m.redelivered, b) for m, _, b in get_n(ch, q, 3)] == [(True, b"0"), (True, b"1"), (True, b"2")]


def test_reject_without_requeue_drops(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"m")
    ch.basic_publish("", q, b"n")
    (m, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert body == b"m"
    ch.basic_reject(m.delivery_tag, requeue=False)
    (m, _, body), = get_n(ch, q, 1, auto_ack=False)
    assert body == b"n" and m.redelivered is False
    ch.basic_nack(m.delivery_tag, requeue=False)
    sync(ch)
    assert ch.basic_get(q) == (None, None, None)
    assert ready_count(ch, q) == 0
    # and they do not come back when the channel closes
    ch.close()
    assert ready_count(conn.channel(), q) == 0


# --------------------------------------------------------------------------- confirms and tx


def test_confirms(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", q, str(i).encode())  # raises NackError if nacked
    ch.basic_publish("", q, b"persistent", pika.BasicProperties(delivery_mode=2))
    assert ready_count(ch, q) == 51
    # unroutable + mandatory in confirm mode: basic.return, then basic.ack
    with pytest.raises(UnroutableError) as ei:
        ch.basic_publish("", uniq("nowhere"), b"lost", mandatory=True)
    (returned,) = ei.value.messages
    assert returned.method.reply_code == 312 and returned.body == b"lost"
    # unroutable without mandatory is simply acked
    ch.basic_publish("", uniq("nowhere"), b"dropped")
    assert ch.is_open
    assert [b for _, _, b in get_n(ch, q, 51)] == [str(i).encode() for i in range(50)] + [b"persistent"]


def test_406_confirm_select_on_transactional_channel(conn):
    def action(ch):
        ch.tx_select()
        ch.confirm_delivery()

    expect_channel_error(conn, action, 406,
                         "PRECONDITION_FAILED - cannot switch from tx to confirm mode")


def test_tx_publish_commit_and_rollback(conn):
    observer = conn.channel()
    q = observer.queue_declare("", exclusive=True).method.queue
    tx = conn.channel()
    tx.tx_select()
    tx.basic_publish("", q, b"one")
    tx.basic_publish("", q, b"two")
    sync(tx)
    assert ready_count(observer, q) == 0, "uncommitted publishes must not be visible"
    assert observer.basic_get(q) == (None, None, None)
    tx.tx_commit()
    assert pump_until(conn, lambda: ready_count(observer, q) == 2)
    tx.basic_publish("", q, b"rolled back")
    sync(tx)
    tx.tx_rollback()
    tx.basic_publish("", q, b"three")
    tx.tx_commit()
    assert [b for _, _, b in get_n(observer, q, 3)] == [b"one", b"two", b"three"]
    sync(observer)
    assert ready_count(observer, q) == 0


def tx_to_a_full_queue(conn, queue_type):
    """A transaction of three publishes to a queue that takes one (x-max-length 1,
    reject-publish): its commit, and what the queue holds after."""
    ch = conn.channel()
    q = uniq(f"tx.full.{queue_type}")
    ch.queue_declare(q, durable=True, arguments={
        "x-queue-type": queue_type, "x-max-length": 1, "x-overflow": "reject-publish"})

    def action(tx):
        tx.tx_select()
        for i in range(3):
            tx.basic_publish("", q, b"m%d" % i)
        tx.tx_commit()

    expect_channel_error(conn, action, 406, "PRECONDITION_FAILED - partial tx completion")
    (m, _, body), = get_n(ch, q, 1)
    assert body == b"m0"
    ch.queue_delete(q)


def test_406_partial_tx_completion_when_a_classic_queue_refuses(conn):
    # RabbitMQ completes a commit only once its publishes are confirmed; a refused one
    # fails it (the queue keeps what it took)
    tx_to_a_full_queue(conn, "classic")


@pytest.mark.ours_only
def test_406_partial_tx_completion_when_a_quorum_queue_refuses(conn):
    # the commit waits for the quorum queue's log (before, commit-ok came at once and
    # the refusal was lost); RabbitMQ 3.10's quorum queue applies reject-publish
    # lazily and took all three (docs/compatibility.md)
    tx_to_a_full_queue(conn, "quorum")


def test_tx_acks_apply_on_commit_only(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for b in (b"a", b"b"):
        ch.basic_publish("", q, b)
    tx = conn.channel()
    tx.tx_select()
    (ma, _, _), (mb, _, _) = get_n(tx, q, 2, auto_ack=False)
    tx.basic_ack(ma.delivery_tag)
    tx.tx_rollback()  # the ack of "a" is forgotten; "a" stays unacked
    tx.basic_ack(mb.delivery_tag)
    tx.tx_commit()  # "b" is gone for good
    tx.close()  # "a" comes back
    assert [(m.redelivered, b) for m, _, b in get_n(ch, q, 1)] == [(True, b"a")]
    sync(ch)
    assert ready_count(ch, q) == 0


def test_tx_select_on_closed_channel_does_not_affect_others(conn):
    tx = conn.channel()
    tx.tx_select()
    q = tx.queue_declare("", exclusive=True).method.queue
    tx.basic_publish("", q, b"never committed")
    tx.close()
    ch = conn.channel()
    assert ready_count(ch, q) == 0
    round_trip(ch)


# --------------------------------------------------------------------------- properties and bodies


class Typed:
    """A field-table value with an explicit AMQP type tag (pika cannot produce some tags)."""

    FORMATS = {b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"i": ">I", b"I": ">i", b"l": ">q",
               b"f": ">f", b"d": ">d"}

    def __init__(self, kind, value):
        self.kind, self.value = kind, value

    def __eq__(self, other):
        return isinstance(other, Typed) and (self.kind, self.value) == (other.kind, other.value)

    def __repr__(self):
        return f"Typed({self.kind!r}, {self.value!r})"


@pytest.fixture
def typed_tables(monkeypatch):
    """Teaches pika's table codec floats and the other RabbitMQ field types: encodes Typed
    values and Python floats ('d'); decodes b B s u i l f d back into Typed so that the tag
    that came back is checked too (pika itself sends ints as 'I', or 'l' beyond 32 bits)."""
    orig_encode, orig_decode = pika.data.encode_value, pika.data.decode_value

    def encode_value(pieces, value):
        if isinstance(value, float):
            value = Typed(b"d", value)
        if isinstance(value, Typed):
            pieces.append(value.kind + struct.pack(Typed.FORMATS[value.kind], value.value))
            return 1 + struct.calcsize(Typed.FORMATS[value.kind])
        return orig_encode(pieces, value)

    def decode_value(encoded, offset):
        kind = encoded[offset:offset + 1]
        if kind in (b"b", b"B", b"s", b"u", b"i", b"l", b"f", b"d"):
            fmt = Typed.FORMATS[kind]
            (value,) = struct.unpack_from(fmt, encoded, offset + 1)
            return Typed(kind, value), offset + 1 + struct.calcsize(fmt)
        return orig_decode(encoded, offset)

    monkeypatch.setattr(pika.data, "encode_value", encode_value)
    monkeypatch.setattr(pika.data, "decode_value", decode_value)


HEADERS = {
    "int": 42,
    "negative": -7,
    "zero": 0,
    "int32-max": 2**31 - 1,
    "big": 2**40,
    "int64-min": -(2**63),
    "str": "héllo wörld ✓",
    "empty-str": "",
    "long-str": "x" * 1000,
    "true": True,
    "false": False,
    "float": 3.141592653589793,
    "float-neg": -0.5,
    "float32": Typed(b"f", 0.25),
    "int8": Typed(b"b", -128),
    "uint8": Typed(b"B", 255),
    "int16": Typed(b"s", -32768),
    "uint16": Typed(b"u", 65535),
    "uint32": Typed(b"i", 4294967295),
    "nested": {"a": [1, "two", {"three": 3.0, "four": [True, None]}], "b": {}, "c": {"d": {"e": "deep"}}},
    "list": [1, "a", False, b"\x00", [], [2, [3]]],
    "empty-list": [],
    "bytes": b"\x00\x01\xfe\xff binary",
    "timestamp": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "decimal": decimal.Decimal("12.34"),
    "decimal-int": decimal.Decimal("-5"),
    "none": None,
    "x-unicode-kéy": "value",
}


def as_decoded(v):
    """What `typed_tables` decodes a value sent by pika into."""
    if isinstance(v, float):
        return Typed(b"d", v)
    if type(v) is int and not -(2**31) <= v < 2**31:
        return Typed(b"l", v)
    if isinstance(v, dict):
        return {k: as_decoded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [as_decoded(x) for x in v]
    return v


def assert_same_typed(got, want, path="headers"):
    """Equal, and of the same Python types all the way down (True is not 1)."""
    assert type(got) is type(want), f"{path}: {got!r} vs {want!r}"
    if isinstance(want, dict):
        assert list(got) == list(want), path  # same keys, same order
        for k in want:
            assert_same_typed(got[k], want[k], f"{path}[{k!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_typed(g, w, f"{path}[{i}]")
    else:
        assert got == want, f"{path}: {got!r} vs {want!r}"


ALL_PROPERTIES = dict(
    content_type="application/json",
    content_encoding="utf-8",
    headers=HEADERS,
    delivery_mode=2,
    priority=3,
    correlation_id="corr-1",
    reply_to="reply-queue",
    expiration="60000",
    message_id="msg-1",
    timestamp=1700000000,
    type="event.type",
    user_id="guest",
    app_id="test-app",
    cluster_id="cluster-x",
)


@pytest.mark.parametrize("via", ["basic.get", "basic.consume"])
def test_properties_and_headers_round_trip(conn, typed_tables, via):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b'{"k": 1}', pika.BasicProperties(**ALL_PROPERTIES))
    # a message with no properties at all stays without properties
    ch.basic_publish("", q, b"bare")
    if via == "basic.get":
        got = [(p, b) for _, p, b in get_n(ch, q, 2)]
    else:
        got = []
        ch.basic_consume(q, lambda c, m, p, b: got.append((p, b)), auto_ack=True)
        assert pump_until(conn, lambda: len(got) == 2)
    (props, body), (bare_props, bare_body) = got
    assert body == b'{"k": 1}'
    for field, want in ALL_PROPERTIES.items():
        if field != "headers":
            assert getattr(props, field) == want, field
    assert_same_typed(props.headers, as_decoded(HEADERS))

    assert bare_body == b"bare"
    for field in ALL_PROPERTIES:
        assert getattr(bare_props, field) is None, field


def test_five_mebibyte_body_arrives_intact(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = random.Random(1234).randbytes(5 * 1024 * 1024)
    ch.basic_publish("", q, body, pika.BasicProperties(content_type="application/octet-stream"))
    ch.basic_publish("", q, b"small one after")
    got = []
    ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
    assert pump_until(conn, lambda: len(got) == 2, timeout=15)
    assert len(got[0]) == len(body)
    assert got[0] == body
    assert got[1] == b"small one after"


def test_empty_body(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"")
    (m, _, body), = get_n(ch, q, 1)
    assert body == b""
