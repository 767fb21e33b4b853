"""Classic queues used from another node of a three-node cluster (issue 16, step 5;
docs/design/cluster.md §6): a queue declared on node 1 takes confirmed publishes from
nodes 2 and 3 (the confirm follows the home's commit), answers basic.get (with ack, nack
and requeue), queue.purge, queue.delete and passive declares from node 2 with the
home's figures, and requeues what a closed channel of another node held. With its home
killed (SIGKILL) publishers elsewhere get basic.nack and the other operations RabbitMQ's
404 "home node ... is down or inaccessible"; once the home is back every confirmed
persistent message is there. basic.consume from another node works through a proxy
consumer at the home: in order, with the channel's prefetch, nack/requeue, cancel and
close; the home's death cancels the consumer (basic.cancel) and loses nothing."""
import json
import os
import sys
import time
import urllib.request

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import channel, declare_on, eventually  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

PERSISTENT = pika.BasicProperties(delivery_mode=2)


def test_confirmed_publishes_from_two_nodes_arrive_in_order_with_headers(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.pub")
    for node, tag in ((n2, "two"), (n3, "three")):
        conn, ch = channel(node)
        ch.confirm_delivery()
        for i in range(200):
            props = pika.BasicProperties(delivery_mode=2, headers={"from": tag, "i": i}, content_type="text/plain")
            ch.basic_publish("", "rq.pub", f"{tag}-{i}".encode(), props, mandatory=True)
        conn.close()
    # the home has them all: node 2's in its order, then node 3's
    conn, ch = channel(n1)
    got = []
    while True:
        m, props, body = ch.basic_get("rq.pub", auto_ack=True)
        if m is None:
            break
        got.append((body.decode(), props.headers, props.content_type, props.delivery_mode))
    conn.close()
    assert [g[0] for g in got] == [f"two-{i}" for i in range(200)] + [f"three-{i}" for i in range(200)]
    assert got[5][1] == {"from": "two", "i": 5} and got[5][2] == "text/plain" and got[5][3] == 2


def test_get_ack_nack_requeue_purge_and_delete_from_another_node(cluster):
    n1, n2, _ = cluster.nodes
    declare_on(n1, (n2,), "rq.ops")
    conn, ch = channel(n2)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "rq.ops", f"m{i}".encode(), pika.BasicProperties(headers={"k": i}))
    # passive declare on node 2 counts the home's messages
    assert ch.queue_declare("rq.ops", passive=True).method.message_count == 5
    m, props, body = ch.basic_get("rq.ops")
    assert (body, m.redelivered, m.message_count, props.headers) == (b"m0", False, 4, {"k": 0})
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get("rq.ops")
    assert (body, m.redelivered) == (b"m0", True)
    ch.basic_ack(m.delivery_tag)
    m, _, body = ch.basic_get("rq.ops")
    assert body == b"m1"
    ch.basic_reject(m.delivery_tag, requeue=False)
    eventually(lambda: ch.queue_declare("rq.ops", passive=True).method.message_count == 3, what="ack and reject at home")
    # queue.delete if-empty refused with the home's 406, on a channel of its own
    ch2 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch2.queue_delete("rq.ops", if_empty=True)
    assert e.value.reply_code == 406
    assert ch.queue_purge("rq.ops").method.message_count == 3
    m, _, _ = ch.basic_get("rq.ops")
    assert m is None
    ch.basic_publish("", "rq.ops", b"last")
    assert ch.queue_delete("rq.ops").method.message_count == 1
    conn.close()
    for node in cluster.nodes:
        eventually(lambda: all(q["name"] != "rq.ops" for q in node.api("/api/queues/%2F")), what=f"delete on {node.name}")


def test_a_closed_channel_of_another_node_gives_its_messages_back(cluster):
    n1, _, n3 = cluster.nodes
    declare_on(n1, (n3,), "rq.close")
    conn, ch = channel(n3)
    ch.confirm_delivery()
    ch.basic_publish("", "rq.close", b"held")
    m, _, body = ch.basic_get("rq.close")
    assert body == b"held"
    assert ch.queue_declare("rq.close", passive=True).method.message_count == 0
    conn.close()
    conn, ch = channel(n1)
    got = eventually(lambda: ch.basic_get("rq.close", auto_ack=True)[0] is not None and True, what="requeued at home")
    assert got
    conn.close()


def test_many_unconfirmed_publishes_are_paced_and_all_arrive(cluster):
    n1, n2, _ = cluster.nodes
    declare_on(n1, (n2,), "rq.flow")
    conn, ch = channel(n2)
    body = b"x" * 1024
    for _ in range(20000):
        ch.basic_publish("", "rq.flow", body)
    ch.confirm_delivery()
    ch.basic_publish("", "rq.flow", b"end")
    count = ch.queue_declare("rq.flow", passive=True).method.message_count
    assert count == 20001
    ch.queue_delete("rq.flow")
    conn.close()


def test_the_management_api_of_every_node_shows_the_homes_figures(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.api")
    conn, ch = channel(n1)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "rq.api", b"x" * 100)
    ch.basic_qos(prefetch_count=2)
    held = []
    ch.basic_consume("rq.api", lambda c, m, p, b: held.append(m))
    eventually(lambda: ch.connection.process_data_events(0.1) or len(held) == 2, what="two held")
    for node in (n1, n2, n3):
        q = node.api("/api/queues/%2F/rq.api")
        assert q["node"] == n1.name, q
        got = (q["messages"], q["messages_ready"], q["messages_unacknowledged"], q["consumers"])
        assert got == (5, 3, 2, 1), (node.name, q)
        listed = [x for x in node.api("/api/queues") if x["name"] == "rq.api"]
        assert [(x["messages_ready"], x["messages_unacknowledged"]) for x in listed] == [(3, 2)], listed
    # the cluster-wide totals of /api/overview include it on every node
    totals = [node.api("/api/overview")["queue_totals"] for node in (n1, n2, n3)]
    assert all(t["messages_unacknowledged"] >= 2 and t["messages_ready"] >= 3 for t in totals), totals
    ch.queue_delete("rq.api")
    conn.close()


def api_get(node, name, count, ackmode):
    """POST /api/queues/%2F/{name}/get on `node` (the management UI's "Get messages")."""
    body = json.dumps({"count": count, "ackmode": ackmode, "encoding": "auto"}).encode()
    req = urllib.request.Request(f"{node.http_url}/api/queues/%2F/{name}/get", data=body, method="POST")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_the_management_apis_get_through_another_node(cluster):
    n1, n2, _ = cluster.nodes
    declare_on(n1, (n2,), "rq.apiget")
    publish_from(n1, "rq.apiget", [f"g{i}" for i in range(4)])
    # requeued: the messages stay, redelivered after
    got = api_get(n2, "rq.apiget", 2, "ack_requeue_true")
    assert [(m["payload"], m["redelivered"]) for m in got] == [("g0", False), ("g1", False)], got
    assert got[0]["message_count"] == 3 and got[0]["routing_key"] == "rq.apiget"
    eventually(lambda: home_counts(n1, "rq.apiget") == (4, 0), what="requeued at the home")
    # taken: gone from the home
    got = api_get(n2, "rq.apiget", 3, "ack_requeue_false")
    assert sorted(m["payload"] for m in got) == ["g0", "g1", "g2"], got
    assert home_counts(n1, "rq.apiget") == (1, 0)
    conn, ch = channel(n1)
    ch.queue_delete("rq.apiget")
    conn.close()


def test_tx_commit_from_another_node_waits_for_the_home(cluster):
    n1, n2, _ = cluster.nodes
    declare_on(n1, (n2,), "rq.tx")
    declare_on(n1, (n2,), "rq.tx.full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    conn, ch = channel(n2)
    ch.tx_select()
    for i in range(50):
        ch.basic_publish("", "rq.tx", f"t{i}".encode(), PERSISTENT)
    ch.tx_commit()
    # commit-ok came after the home enqueued them: the home counts them at once
    home, hch = channel(n1)
    assert hch.queue_declare("rq.tx", passive=True).method.message_count == 50
    # a publish the home refuses fails the commit, as a local queue's would
    for i in range(3):
        ch.basic_publish("", "rq.tx.full", f"f{i}".encode())
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_commit()
    assert (ei.value.reply_code, ei.value.reply_text) == (406, "PRECONDITION_FAILED - partial tx completion")
    assert hch.queue_declare("rq.tx.full", passive=True).method.message_count == 1
    for q in ("rq.tx", "rq.tx.full"):
        hch.queue_delete(q)
    conn.close()
    home.close()


class Collector:
    """Deliveries of a consumer, in arrival order."""

    def __init__(self, ch):
        self.ch = ch
        self.got = []
        self.cancelled = []

    def __call__(self, ch, method, props, body):
        self.got.append((method, props, body))

    def on_cancel(self, frame):
        self.cancelled.append(frame.method.consumer_tag)

    def wait(self, n, timeout=20.0):
        """Polls until at least `n` deliveries arrived."""
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            self.ch.connection.process_data_events(time_limit=0.1)
        assert len(self.got) >= n, f"{len(self.got)} of {n} deliveries within {timeout}s"


def home_counts(node, name):
    q = node.api(f"/api/queues/%2F/{name}")
    return q.get("messages_ready"), q.get("messages_unacknowledged")


def publish_from(node, name, bodies, persistent=False):
    conn, ch = channel(node)
    ch.confirm_delivery()
    for i, b in enumerate(bodies):
        props = pika.BasicProperties(delivery_mode=2 if persistent else 1, headers={"i": i}, content_type="text/plain")
        ch.basic_publish("", name, b.encode(), props, mandatory=True)
    conn.close()


def test_consume_on_a_third_node_gets_publishes_of_a_second_in_order(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.consume")
    conn, ch = channel(n3)
    c = Collector(ch)
    tag = ch.basic_consume("rq.consume", c)
    publish_from(n2, "rq.consume", [f"c{i}" for i in range(300)])
    c.wait(300)
    assert [b.decode() for _, _, b in c.got] == [f"c{i}" for i in range(300)]
    m, props, _ = c.got[7]
    assert (m.consumer_tag, m.redelivered, m.exchange, m.routing_key) == (tag, False, "", "rq.consume")
    assert props.headers == {"i": 7} and props.content_type == "text/plain"
    # this channel's own delivery tags, 1 up
    assert [m.delivery_tag for m, _, _ in c.got] == list(range(1, 301))
    ch.basic_ack(c.got[-1][0].delivery_tag, multiple=True)
    eventually(lambda: home_counts(n1, "rq.consume") == (0, 0), what="acks at the home")
    # the home counts the proxy as a consumer
    assert n1.api("/api/queues/%2F/rq.consume")["consumers"] == 1
    conn.close()
    eventually(lambda: n1.api("/api/queues/%2F/rq.consume")["consumers"] == 0, what="proxy gone with the channel")


def test_prefetch_limits_what_a_consumer_of_another_node_holds(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.prefetch")
    publish_from(n2, "rq.prefetch", [f"p{i}" for i in range(20)])
    conn, ch = channel(n3)
    ch.basic_qos(prefetch_count=5)
    c = Collector(ch)
    ch.basic_consume("rq.prefetch", c)
    c.wait(5)
    eventually(lambda: home_counts(n1, "rq.prefetch") == (15, 5), what="5 unacked at the home")
    conn.process_data_events(time_limit=0.5)
    assert len(c.got) == 5
    ch.basic_ack(c.got[4][0].delivery_tag, multiple=True)
    c.wait(10)
    eventually(lambda: home_counts(n1, "rq.prefetch") == (10, 5), what="the next 5 unacked at the home")
    assert len(c.got) == 10
    assert [b.decode() for _, _, b in c.got] == [f"p{i}" for i in range(10)]
    ch.queue_delete("rq.prefetch")
    conn.close()


def test_nack_requeue_redelivers_and_cancel_leaves_the_rest(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.nack")
    publish_from(n2, "rq.nack", [f"n{i}" for i in range(10)])
    conn, ch = channel(n3)
    ch.basic_qos(prefetch_count=1)
    c = Collector(ch)
    tag = ch.basic_consume("rq.nack", c)
    c.wait(1)
    m, _, body = c.got[0]
    assert (body, m.redelivered) == (b"n0", False)
    ch.basic_nack(m.delivery_tag, requeue=True)
    c.wait(2)
    m, _, body = c.got[1]
    assert (body, m.redelivered) == (b"n0", True)
    ch.basic_ack(m.delivery_tag)
    c.wait(3)
    ch.basic_reject(c.got[2][0].delivery_tag, requeue=False)
    c.wait(4)
    assert c.got[3][2] == b"n2"
    ch.basic_cancel(tag)
    eventually(lambda: n1.api("/api/queues/%2F/rq.nack")["consumers"] == 0, what="proxy cancelled at the home")
    # the unacked one stays with the channel until it closes, as in RabbitMQ
    assert home_counts(n1, "rq.nack") == (7, 1)
    conn.close()
    eventually(lambda: home_counts(n1, "rq.nack") == (8, 0), what="the channel's unacked requeued")
    conn, ch = channel(n2)
    bodies = []
    while True:
        m, _, body = ch.basic_get("rq.nack", auto_ack=True)
        if m is None:
            break
        bodies.append(body.decode())
    conn.close()
    assert bodies == [f"n{i}" for i in range(2, 10)]


def test_exclusive_and_single_active_consumers_across_nodes(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2,), "rq.excl")
    c1, ch1 = channel(n1)
    ch1.basic_consume("rq.excl", lambda *a: None, exclusive=True)
    c2, ch2 = channel(n2)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch2.basic_consume("rq.excl", lambda *a: None)
    assert e.value.reply_code == 403 and "in exclusive use" in e.value.reply_text, e.value.reply_text
    c1.close()
    ch2 = c2.channel()
    ch2.basic_consume("rq.excl", lambda *a: None, exclusive=True)
    c1, ch1 = channel(n1)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch1.basic_consume("rq.excl", lambda *a: None)
    assert e.value.reply_code == 403
    c1.close()
    c2.close()
    # single active consumer: the first subscribed (on node 3) gets everything
    declare_on(n1, (n2, n3), "rq.sac", arguments={"x-single-active-consumer": True})
    c3, ch3 = channel(n3)
    first = Collector(ch3)
    ch3.basic_consume("rq.sac", first, auto_ack=True)
    eventually(lambda: n1.api("/api/queues/%2F/rq.sac")["consumers"] == 1, what="remote consumer at the home")
    c1, ch1 = channel(n1)
    second = Collector(ch1)
    ch1.basic_consume("rq.sac", second, auto_ack=True)
    publish_from(n2, "rq.sac", [f"s{i}" for i in range(20)])
    first.wait(20)
    c1.process_data_events(time_limit=0.2)
    assert second.got == []
    # it goes: the next one takes over
    c3.close()
    publish_from(n2, "rq.sac", ["after"])
    second.wait(1)
    assert second.got[0][2] == b"after"
    c1.close()


def test_home_killed_cancels_consumers_of_other_nodes_and_loses_nothing(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.ckill")
    bodies = [f"k{i}" for i in range(200)]
    publish_from(n2, "rq.ckill", bodies, persistent=True)
    conn, ch = channel(n3)
    ch.basic_qos(prefetch_count=10)
    c = Collector(ch)
    ch.add_on_cancel_callback(c.on_cancel)
    tag = ch.basic_consume("rq.ckill", c)
    c.wait(10)
    ch.basic_ack(c.got[4][0].delivery_tag, multiple=True)
    eventually(lambda: sum(home_counts(n1, "rq.ckill")) == 195, what="acks at home")
    n1.kill9()
    deadline = time.monotonic() + 20
    while not c.cancelled and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert c.cancelled == [tag]
    # acks of what the dead home delivered are not a channel error
    ch.basic_ack(c.got[-1][0].delivery_tag, multiple=True)
    ch.basic_qos(prefetch_count=10)
    assert ch.is_open
    conn.close()
    n1.start()
    cluster.wait_formed()
    eventually(lambda: home_counts(n1, "rq.ckill")[0] >= 190, timeout=30, what="messages back at the home")
    conn, ch = channel(n3)
    c = Collector(ch)
    ch.basic_consume("rq.ckill", c)
    c.wait(190, timeout=30)
    got = [b.decode() for _, _, b in c.got]
    lost = set(bodies[5:]) - set(got)
    assert not lost, f"lost {len(lost)}"
    conn.close()


def test_home_killed_nacks_publishes_404s_and_keeps_confirmed_messages(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rq.loss")
    conn, ch = channel(n2)
    ch.confirm_delivery()
    confirmed = 0
    for i in range(300):
        ch.basic_publish("", "rq.loss", f"p{i}".encode(), PERSISTENT)
        confirmed += 1
    conn.close()
    n1.kill9()
    eventually(lambda: not {n["name"]: n["running"] for n in n2.api("/api/nodes")}[n1.name], what="home seen down")
    conn, ch = channel(n2)
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "rq.loss", b"lost", PERSISTENT)
    conn.close()
    conn, ch = channel(n3)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_get("rq.loss")
    want = f"home node '{n1.name}' of durable queue 'rq.loss' in vhost '/' is down or inaccessible"
    assert e.value.reply_code == 404 and want in e.value.reply_text, e.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.queue_declare("rq.loss", passive=True)
    assert e.value.reply_code == 404 and want in e.value.reply_text
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_consume("rq.loss", lambda *a: None)
        conn.process_data_events(time_limit=1)
    assert e.value.reply_code == 404 and want in e.value.reply_text
    conn.close()
    n1.start()
    cluster.wait_formed()

    def count():
        c, chan = channel(n3)
        try:
            return chan.queue_declare("rq.loss", passive=True).method.message_count
        finally:
            c.close()

    assert eventually(lambda: count() == confirmed, timeout=30, what="confirmed messages back")
    conn, ch = channel(n3)
    bodies = []
    while True:
        m, _, body = ch.basic_get("rq.loss", auto_ack=True)
        if m is None:
            break
        bodies.append(body.decode())
    conn.close()
    lost = set(f"p{i}" for i in range(confirmed)) - set(bodies)
    assert not lost, f"lost {len(lost)}"
    assert bodies == [f"p{i}" for i in range(confirmed)]


def test_a_delayed_message_waits_on_the_node_that_took_it(cluster):
    """A durable x-delayed-message exchange exists on every node; a message published
    on node 2 waits in node 2's waiting room (its API counts it), then is routed to the
    queue whose home is node 1."""
    n1, n2, n3 = cluster.nodes
    conn, ch = channel(n1)
    ch.exchange_declare("rq.delayed", "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    conn.close()
    declare_on(n1, (n2, n3), "rq.delayed.q")
    conn, ch = channel(n1)
    ch.queue_bind("rq.delayed.q", "rq.delayed", "k")
    conn.close()
    eventually(lambda: n2.api("/api/exchanges/%2F/rq.delayed").get("messages_delayed") == 0,
               what="the exchange on node 2")
    conn, ch = channel(n2)
    ch.confirm_delivery()
    start = time.monotonic()
    ch.basic_publish("rq.delayed", "k", b"later",
                     pika.BasicProperties(delivery_mode=2, headers={"x-delay": 1500}))
    conn.close()
    assert n2.api("/api/exchanges/%2F/rq.delayed")["messages_delayed"] == 1
    assert n1.api("/api/exchanges/%2F/rq.delayed")["messages_delayed"] == 0
    conn, ch = channel(n1)
    got = []
    while not got and time.monotonic() - start < 15:
        m, props, body = ch.basic_get("rq.delayed.q", auto_ack=True)
        if m is None:
            conn.process_data_events(0.02)
            continue
        got.append((time.monotonic() - start, body, props.headers["x-delay"]))
    conn.close()
    assert len(got) == 1, got
    at, body, delay = got[0]
    assert body == b"later" and delay in (-1500, 2**64 - 1500)
    assert at >= 1.45, at
    eventually(lambda: n2.api("/api/exchanges/%2F/rq.delayed")["messages_delayed"] == 0,
               what="node 2's waiting room empty")
