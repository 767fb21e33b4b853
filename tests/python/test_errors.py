"""Error cases with RabbitMQ's reply codes; a channel error leaves the connection usable."""
import datetime
import decimal

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conftest import connect, drain


def channel_error(conn, fn):
    ch = conn.channel()
    with pytest.raises(ChannelClosedByBroker) as e:
        fn(ch)
    # the connection goes on
    assert conn.is_open
    conn.channel().queue_declare("", exclusive=True)
    return e.value.reply_code, e.value.reply_text


def connection_error(broker, fn):
    c = connect(broker)
    ch = c.channel()
    with pytest.raises(ConnectionClosedByBroker) as e:
        fn(ch)
    return e.value.reply_code, e.value.reply_text


def test_404_passive_declare(conn):
    code, text = channel_error(conn, lambda ch: ch.queue_declare("missing-q", passive=True))
    assert (code, text) == (404, "NOT_FOUND - no queue 'missing-q' in vhost '/'")


def test_406_inequivalent_redeclare(conn):
    conn.channel().queue_declare("redecl")
    code, text = channel_error(conn, lambda ch: ch.queue_declare("redecl", durable=True))
    assert code == 406 and "inequivalent arg 'durable'" in text


def test_405_exclusive_queue_of_another_connection(conn, broker):
    conn.channel().queue_declare("mine", exclusive=True)
    other = connect(broker)
    code, _ = channel_error(other, lambda ch: ch.basic_consume("mine", lambda *a: None))
    assert code == 405
    other.close()


def test_403_reserved_names(conn):
    assert channel_error(conn, lambda ch: ch.exchange_declare("amq.foo", "direct"))[0] == 403
    assert channel_error(conn, lambda ch: ch.exchange_delete("amq.direct"))[0] == 403
    q = conn.channel().queue_declare("", exclusive=True).method.queue
    assert channel_error(conn, lambda ch: ch.queue_bind(q, "", "k"))[0] == 403


def test_503_unknown_exchange_type(broker):
    code, _ = connection_error(broker, lambda ch: ch.exchange_declare("weird", "x-nope"))
    assert code == 503


def test_404_publish_to_missing_exchange(conn):
    def fn(ch):
        ch.basic_publish("no-such-exchange", "k", b"x")
        ch.queue_declare("", exclusive=True)
    assert channel_error(conn, fn) == (404, "NOT_FOUND - no exchange 'no-such-exchange' in vhost '/'")


def test_406_unknown_and_double_ack(conn):
    def unknown(ch):
        ch.basic_ack(42)
        ch.queue_declare("", exclusive=True)
    assert channel_error(conn, unknown) == (406, "PRECONDITION_FAILED - unknown delivery tag 42")

    def double(ch):
        q = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", q, b"x")
        m, _, _ = ch.basic_get(q)
        ch.basic_ack(m.delivery_tag)
        ch.basic_ack(m.delivery_tag)
        ch.queue_declare("", exclusive=True)
    assert channel_error(conn, double)[0] == 406


def test_540_rows(broker):
    assert connection_error(broker, lambda ch: ch.basic_qos(prefetch_size=10)) == (540, "NOT_IMPLEMENTED - prefetch_size!=0 (10)")
    assert connection_error(broker, lambda ch: ch.flow(False)) == (540, "NOT_IMPLEMENTED - active=false")
    assert connection_error(broker, lambda ch: ch.basic_recover(requeue=False)) == (540, "NOT_IMPLEMENTED - requeue=false")


def test_406_tx_commit_without_select(conn):
    assert channel_error(conn, lambda ch: ch.tx_commit()) == (406, "PRECONDITION_FAILED - channel is not transactional")


def test_delete_conditions(conn):
    ch = conn.channel()
    ch.queue_declare("full-q")
    ch.basic_publish("", "full-q", b"x")
    assert channel_error(conn, lambda c: c.queue_delete("full-q", if_empty=True))[0] == 406
    ch = conn.channel()
    ch.basic_consume("full-q", lambda *a: None)
    assert channel_error(conn, lambda c: c.queue_delete("full-q", if_unused=True))[0] == 406


def test_mandatory_return(conn):
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, method, props, body: returned.append((method.reply_code, method.reply_text, body)))
    ch.basic_publish("", "nobody-home", b"back", mandatory=True)
    conn.process_data_events(time_limit=0.5)
    assert returned == [(312, "NO_ROUTE", b"back")]


def test_consumer_of_deleted_queue_is_cancelled(conn, broker):
    ch = conn.channel()
    ch.queue_declare("doomed")
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume("doomed", lambda *a: None, consumer_tag="watcher")
    other = connect(broker)
    other.channel().queue_delete("doomed")
    other.close()
    conn.process_data_events(time_limit=0.5)
    assert cancelled == ["watcher"]


def test_unacked_return_redelivered_on_channel_close(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    for i in range(3):
        ch.basic_publish("", q, str(i).encode())
    ch2 = conn.channel()
    got = [ch2.basic_get(q)[2] for _ in range(3)]
    assert got == [b"0", b"1", b"2"]
    ch2.close()
    again = []
    for _ in range(3):
        m, _, body = ch.basic_get(q, auto_ack=True)
        assert m.redelivered
        again.append(body)
    assert again == [b"0", b"1", b"2"]


def test_nack_requeue_and_reject_drop(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", q, b"m")
    m, _, _ = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q)
    assert m.redelivered and body == b"m"
    ch.basic_reject(m.delivery_tag, requeue=False)
    assert ch.basic_get(q) == (None, None, None)


def test_confirms_and_tx(conn, broker):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, str(i).encode())  # raises if nacked
    assert ch.queue_declare(q, passive=True).method.message_count == 20
    tch = conn.channel()
    tch.tx_select()
    tch.basic_publish("", q, b"tx")
    assert ch.queue_declare(q, passive=True).method.message_count == 20
    tch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 21
    tch.basic_publish("", q, b"rolled back")
    tch.tx_rollback()
    assert ch.queue_declare(q, passive=True).method.message_count == 21


def test_properties_round_trip(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    headers = {
        "int": 42, "neg": -7, "big": 2**40, "str": "héllo", "bool": True,
        "nested": {"a": [1, "two", {"three": 3}]}, "list": [1, 2, 3],
        "bytes": b"\x00\x01\xff", "time": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "dec": decimal.Decimal("12.34"), "none": None,
    }
    props = pika.BasicProperties(content_type="application/json", content_encoding="utf-8", headers=headers,
                                 delivery_mode=2, priority=3, correlation_id="c1", reply_to="r",
                                 expiration="60000", message_id="m1", timestamp=1700000000, type="t",
                                 user_id="guest", app_id="app")
    ch.basic_publish("", q, b"{}", props)
    m, got, body = ch.basic_get(q, auto_ack=True)
    assert body == b"{}"
    for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
                  "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field
    assert got.headers == headers


def test_five_mebibyte_body(conn):
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    body = bytes(range(256)) * (5 * 1024 * 4 + 1)
    ch.basic_publish("", q, body)
    _, _, got = ch.basic_get(q, auto_ack=True)
    assert got == body
