"""What one connection can make the broker hold is bounded: a transaction's uncommitted
publishes, the deliveries waiting for a consumer that stopped reading, and bodies still
being assembled. Past a cap the client gets a clear error (406 for a transaction, as for
a message over the size limit) or flow control, never unbounded buffering."""
import os
import socket
import struct
import threading
import time

import pika
import pika.spec
import pytest

from conftest import uniq
from httpapi import Api
from test_pipelining import frame, method, open_raw

MiB = 1 << 20


def connect(port):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=10))


def test_a_transaction_too_large_is_refused_with_406_and_nothing_of_it_goes_in(broker):
    c = connect(broker)
    admin = c.channel()
    q = uniq("tx-cap")
    admin.queue_declare(q)
    ch = c.channel()
    ch.tx_select()
    body = b"t" * MiB
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        for _ in range(100):
            ch.basic_publish("", q, body)
        ch.tx_commit()
    assert e.value.reply_code == 406 and "transaction too large" in e.value.reply_text, e.value
    # the transaction was discarded; the connection and its other channels go on
    assert admin.queue_declare(q, passive=True).method.message_count == 0
    ch2 = c.channel()
    ch2.tx_select()
    ch2.basic_publish("", q, body)
    ch2.tx_commit()
    assert admin.queue_declare(q, passive=True).method.message_count == 1
    admin.queue_delete(q)
    c.close()


def test_a_consumer_that_stops_reading_is_sent_a_few_mib_not_the_queue(broker):
    """Credit counts bytes as well as messages: a no-ack consumer that stops reading gets
    a few MiB (and what the sockets' buffers take) of 1 MiB messages; the rest stay in the
    queue. Before, 512 deliveries of any size could leave the queue for its write buffer."""
    c = connect(broker)
    ch = c.channel()
    q = uniq("stuck-reader")
    ch.queue_declare(q)
    stuck = connect(broker)
    sch = stuck.channel()
    sch.basic_consume(q, lambda *a: None, auto_ack=True)
    # from here on `stuck` is never pumped: its socket is not read
    body = b"s" * MiB
    for _ in range(200):
        ch.basic_publish("", q, body)
    counts = []
    for _ in range(20):
        time.sleep(0.25)
        counts.append(ch.queue_declare(q, passive=True).method.message_count)
        if len(counts) > 4 and counts[-1] == counts[-4]:
            break
    ready = counts[-1]
    assert ready >= 150, f"only {ready} of 200 left in the queue: the stuck consumer took the rest ({counts})"
    ch.queue_delete(q)
    c.close()
    stuck.close()


@pytest.mark.ours_only
def test_partial_bodies_count_as_publishing_and_the_alarm_holds_them(own_broker_factory):
    """A client that opens bodies on many channels and never finishes one is held by a
    memory alarm like any publisher: before, it was never held, and each channel could
    make the broker reserve a whole declared body."""
    b = own_broker_factory()
    api = Api(b.http_url)
    q = uniq("partial")
    c = connect(b.port)
    c.channel().queue_declare(q)
    base = api.json("/api/nodes")[0]["mem_used"]
    api.ok("PUT", "/api/nodes/broker@localhost/memory-high-watermark", {"limit": str(base + 64 * MiB)})
    s = open_raw(b.port)
    chunk = b"p" * (128 * 1024 - 8)
    burst = b""
    for ch in range(1, 9):
        burst += method(ch, pika.spec.Channel.Open())
    s.sendall(burst)
    time.sleep(0.3)
    sent = [0, None]

    def flood():
        try:
            for ch in range(1, 9):
                header = struct.pack(">HHQ", 60, 0, 16 * MiB - 1) + b"".join(pika.spec.BasicProperties().encode())
                s.sendall(method(ch, pika.spec.Basic.Publish(exchange="", routing_key=q)) + frame(2, ch, header))
            # 8 bodies of 16 MiB, each left one byte short of complete
            for _ in range(127):
                for ch in range(1, 9):
                    s.sendall(frame(3, ch, chunk))
                    sent[0] += len(chunk)
        except OSError as e:
            sent[1] = e

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    t.join(timeout=8)
    node = api.json("/api/nodes")[0]
    # held: the send still waits, or gave up on its socket timeout (not a reset)
    held = t.is_alive() or isinstance(sent[1], socket.timeout)
    assert held, f"the broker read {sent[0] // MiB} MiB of partial bodies without holding the client ({sent[1]!r})"
    assert node["mem_alarm"] is True, node
    assert node["mem_used"] < base + 160 * MiB, (node["mem_used"] - base) / MiB
    s.close()
    # the held client gone, its partial bodies go with it
    t.join(timeout=5)
    api.ok("PUT", "/api/nodes/broker@localhost/memory-high-watermark", {"limit": "0.6"})
    ch = c.channel()
    ch.basic_publish("", q, b"after")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    c.close()
