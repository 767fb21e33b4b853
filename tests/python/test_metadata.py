"""Definitions through the metadata group (issue 16, docs/design/cluster.md §2): every
durable declare, bind and delete is a Raft entry before its -ok, so a kill -9 right after
the answers loses none of them; a data dir without Raft state keeps its definitions;
concurrent declares of one name from several connections get RabbitMQ's answers (one
creates, the others get declare-ok if equivalent, 406 if not).
"""
import os
import shutil
import threading

import pytest
from pika.exceptions import ChannelClosedByBroker

from conftest import connect, uniq


def kill9_and_start(b):
    """SIGKILL (no clean stop: nothing flushed on the way out), then start again on the
    same port and data dir."""
    b.proc.kill()
    b.proc.wait(timeout=10)
    b._launch()


def declare_topology(ch, n):
    """n durable queues bound to a durable direct exchange, each by its own key."""
    x = uniq("meta-x")
    ch.exchange_declare(x, "direct", durable=True)
    queues = [uniq(f"meta-q{i}-") for i in range(n)]
    for q in queues:
        ch.queue_declare(q, durable=True, arguments={"x-max-length": 100})
        ch.queue_bind(q, x, routing_key=q)
    return x, queues


def check_topology(port, x, queues):
    """Every queue exists (passive), is bound (a message routed by its key arrives)."""
    c = connect(port)
    ch = c.channel()
    ch.exchange_declare(x, "direct", passive=True)
    for q in queues:
        ch.queue_declare(q, passive=True)
        ch.basic_publish(x, q, b"routed:" + q.encode())
    for q in queues:
        m, _, body = ch.basic_get(q, auto_ack=True)
        assert m is not None and body == b"routed:" + q.encode(), q
    c.close()


@pytest.mark.ours_only
def test_declares_acknowledged_before_kill9_are_back(own_broker_factory):
    b = own_broker_factory()
    c = connect(b.port)
    ch = c.channel()
    x, queues = declare_topology(ch, 20)
    gone = queues.pop()
    ch.queue_delete(gone)
    unbound = queues.pop()
    ch.queue_unbind(unbound, x, routing_key=unbound)
    kill9_and_start(b)
    check_topology(b.port, x, queues)
    c = connect(b.port)
    ch = c.channel()
    ch.queue_declare(unbound, passive=True)
    ch.basic_publish(x, unbound, b"nowhere")
    assert ch.basic_get(unbound, auto_ack=True)[0] is None
    with pytest.raises(ChannelClosedByBroker) as e:
        ch.queue_declare(gone, passive=True)
    assert e.value.reply_code == 404


@pytest.mark.ours_only
def test_messages_confirmed_right_after_a_declare_survive_kill9(own_broker_factory):
    """Regression: a queue's record is written to the store by the metadata group's apply
    (its Raft log is fsynced, its store write flushed later), and the message index
    replay at start used to restore entries only for queues the store already knew, so a
    kill -9 within about a second of a declare lost the queue's confirmed messages. A
    queue deleted with a message in it stays empty when its name is declared again."""
    import pika

    b = own_broker_factory()
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    gone = uniq("fresh-gone-")
    ch.queue_declare(gone, durable=True)
    ch.basic_publish("", gone, b"deleted", persistent)
    ch.queue_delete(gone)
    queues = [uniq(f"fresh-q{i}-") for i in range(5)]
    for q in queues:
        ch.queue_declare(q, durable=True)
        ch.basic_publish("", q, b"kept:" + q.encode(), persistent)
    kill9_and_start(b)
    c = connect(b.port)
    ch = c.channel()
    for q in queues:
        assert ch.queue_declare(q, durable=True, passive=True).method.message_count == 1, q
        m, _, body = ch.basic_get(q, auto_ack=True)
        assert m is not None and body == b"kept:" + q.encode(), q
    assert ch.queue_declare(gone, durable=True).method.message_count == 0
    assert ch.basic_get(gone, auto_ack=True)[0] is None
    c.close()


@pytest.mark.ours_only
def test_data_dir_without_raft_state_keeps_its_definitions(own_broker_factory):
    b = own_broker_factory()
    c = connect(b.port)
    x, queues = declare_topology(c.channel(), 5)
    c.close()
    b.terminate()
    # a data dir of a version before the metadata group: the keyspace is the state
    shutil.rmtree(os.path.join(b.data_dir, "raft"))
    b._launch()
    check_topology(b.port, x, queues)
    # and the group works from there: new definitions, a restart, all back
    c = connect(b.port)
    x2, queues2 = declare_topology(c.channel(), 3)
    c.close()
    kill9_and_start(b)
    check_topology(b.port, x, queues)
    check_topology(b.port, x2, queues2)


def race(port, name, variants, declare):
    """One connection per variant declares `name` at the same moment; returns per
    variant None (declare-ok) or the reply code it was closed with."""
    conns = [connect(port) for _ in variants]
    chans = [c.channel() for c in conns]
    start = threading.Barrier(len(variants))
    out = [None] * len(variants)

    def run(i):
        start.wait()
        try:
            declare(chans[i], name, variants[i])
        except ChannelClosedByBroker as e:
            out[i] = e.reply_code

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(variants))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for c in conns:
        c.close()
    return out


def check_race(out, variants, winner):
    """Everyone who declared what the winner declared got declare-ok, the others 406."""
    for got, v in zip(out, variants):
        assert got == (None if v == winner else 406), (out, variants, winner)


def test_concurrent_queue_declares_of_one_name(broker):
    name = uniq("meta-race-q")
    variants = [100, None] * 4

    def declare(ch, q, max_len):
        args = {"x-max-length": max_len} if max_len is not None else {}
        ch.queue_declare(q, durable=True, arguments=args)

    out = race(broker, name, variants, declare)
    c = connect(broker)
    ch = c.channel()
    # which variant won: declaring it again is ok
    try:
        ch.queue_declare(name, durable=True, arguments={"x-max-length": 100})
        winner = 100
    except ChannelClosedByBroker:
        winner = None
        ch = c.channel()
    check_race(out, variants, winner)
    ch.queue_delete(name)
    c.close()


def test_concurrent_exchange_declares_of_one_name(broker):
    name = uniq("meta-race-x")
    variants = ["direct", "fanout"] * 4

    def declare(ch, x, kind):
        ch.exchange_declare(x, kind, durable=True)

    out = race(broker, name, variants, declare)
    c = connect(broker)
    ch = c.channel()
    try:
        ch.exchange_declare(name, "direct", durable=True)
        winner = "direct"
    except ChannelClosedByBroker:
        winner = "fanout"
        ch = c.channel()
    check_race(out, variants, winner)
    ch.exchange_delete(name)
    c.close()
