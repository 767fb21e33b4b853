"""A client that pipelines: many commands in one write, then a close in the same write.

The broker hands a channel the commands of one socket read together; whatever closes the
channel or connection in that same read must come after them, so every publish that
preceded the close is queued, in order. RabbitMQ does the same (these pass against it).
"""
import struct
import time

import pika.spec

from conftest import bodies, ready_count, uniq
from test_raw import AMQP_0_9_1, open_socket, read_frame

FRAME_END = b"\xce"


def frame(kind, channel, payload):
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + FRAME_END


def method(channel, m):
    payload = struct.pack(">I", m.INDEX) + b"".join(m.encode())
    return frame(1, channel, payload)


def content(channel, body):
    props = pika.spec.BasicProperties()
    header = struct.pack(">HHQ", 60, 0, len(body)) + b"".join(props.encode())
    return frame(2, channel, header) + frame(3, channel, body)


def publish(channel, queue, body):
    return method(channel, pika.spec.Basic.Publish(exchange="", routing_key=queue)) + content(channel, body)


def expect(s, want_channel, want_class):
    """Reads frames until a method of `want_class` arrives on `want_channel`."""
    while True:
        kind, channel, payload = read_frame(s)
        if kind != 1:
            continue
        (index,) = struct.unpack(">I", payload[:4])
        if channel == want_channel and index == want_class.INDEX:
            return
        assert index not in (pika.spec.Connection.Close.INDEX, pika.spec.Channel.Close.INDEX), \
            f"unexpected close on channel {channel}: {payload!r}"


def open_raw(port):
    s = open_socket(port)
    s.sendall(AMQP_0_9_1)
    expect(s, 0, pika.spec.Connection.Start)
    s.sendall(method(0, pika.spec.Connection.StartOk(
        client_properties={"product": "raw"}, mechanism="PLAIN",
        response="\0guest\0guest", locale="en_US")))
    expect(s, 0, pika.spec.Connection.Tune)
    s.sendall(method(0, pika.spec.Connection.TuneOk(channel_max=16, frame_max=131072, heartbeat=0)))
    s.sendall(method(0, pika.spec.Connection.Open(virtual_host="/")))
    expect(s, 0, pika.spec.Connection.OpenOk)
    return s


def test_publishes_before_a_channel_close_in_the_same_write_are_all_queued(broker, conn, scratch):
    q = scratch.queue("pipelined")
    ch = conn.channel()
    ch.queue_declare(q)
    s = open_raw(broker)
    n = 2000
    burst = method(1, pika.spec.Channel.Open())
    burst += b"".join(publish(1, q, b"m%05d" % i) for i in range(n))
    burst += method(1, pika.spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    s.sendall(burst)
    expect(s, 1, pika.spec.Channel.CloseOk)
    s.close()
    # RabbitMQ may answer close-ok before its queue process has taken the last ones in
    deadline = time.monotonic() + 5
    while ready_count(ch, q) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready_count(ch, q) == n
    assert bodies(ch, q, n) == [b"m%05d" % i for i in range(n)]


def test_interleaved_channels_then_connection_close_in_one_write(broker, conn, scratch):
    qa, qb = scratch.queue("pipe-a"), scratch.queue("pipe-b")
    ch = conn.channel()
    ch.queue_declare(qa)
    ch.queue_declare(qb)
    s = open_raw(broker)
    n = 500
    burst = method(1, pika.spec.Channel.Open()) + method(2, pika.spec.Channel.Open())
    for i in range(n):
        burst += publish(1, qa, b"a%04d" % i) + publish(2, qb, b"b%04d" % i)
    burst += method(0, pika.spec.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
    s.sendall(burst)
    expect(s, 0, pika.spec.Connection.CloseOk)
    s.close()
    assert bodies(ch, qa, n) == [b"a%04d" % i for i in range(n)]
    assert bodies(ch, qb, n) == [b"b%04d" % i for i in range(n)]


def test_a_publish_then_get_in_one_write_sees_the_message(broker, conn, scratch):
    """The queue takes in its inbox before it answers a get from the same channel."""
    q = scratch.queue("pipe-get")
    conn.channel().queue_declare(q)
    s = open_raw(broker)
    burst = method(1, pika.spec.Channel.Open())
    burst += publish(1, q, b"first") + method(1, pika.spec.Basic.Get(queue=q, no_ack=True))
    s.sendall(burst)
    while True:
        kind, channel, payload = read_frame(s)
        if kind != 1:
            continue
        (index,) = struct.unpack(">I", payload[:4])
        assert index != pika.spec.Basic.GetEmpty.INDEX, "get overtook the publish before it"
        if index == pika.spec.Basic.GetOk.INDEX:
            break
    kind, _, _ = read_frame(s)
    assert kind == 2
    kind, _, body = read_frame(s)
    assert (kind, body) == (3, b"first")
    s.close()


def test_declare_publish_consume_in_one_write_keep_their_order(broker):
    """Methods that wait for the queue (declare, consume) hold back what follows them in
    the same read: the publish goes to the queue just declared, and the consumer gets
    it."""
    q = uniq("pipe-declare")
    s = open_raw(broker)
    burst = method(1, pika.spec.Channel.Open())
    burst += method(1, pika.spec.Queue.Declare(queue=q, auto_delete=True))
    burst += publish(1, q, b"after-declare")
    burst += method(1, pika.spec.Basic.Consume(queue=q, consumer_tag="c1", no_ack=True))
    burst += publish(1, q, b"after-consume")
    s.sendall(burst)
    seen = []
    bodies_got = []
    while len(bodies_got) < 2:
        kind, channel, payload = read_frame(s)
        if kind == 1:
            (index,) = struct.unpack(">I", payload[:4])
            assert index != pika.spec.Channel.Close.INDEX, f"channel closed: {payload!r}"
            seen.append(index)
        elif kind == 3:
            bodies_got.append(payload)
    assert seen[:3] == [pika.spec.Channel.OpenOk.INDEX, pika.spec.Queue.DeclareOk.INDEX,
                        pika.spec.Basic.ConsumeOk.INDEX]
    assert bodies_got == [b"after-declare", b"after-consume"]
    s.close()
