"""Every queue from every node, and leaders spread (issue 16, design §3 and §6 "As
built (qqreach)"):

- a quorum queue whose members do not include the client's node (a group smaller than
  the cluster) serves every operation there, through one of its members: publish with
  confirms after the group's commit, nacks for reject-publish, basic.get with ack, nack
  and reject, basic.consume with prefetch and acks, purge, delete, passive declare
  with counts; when that member's node dies, the consumer gets basic.cancel and the
  queue goes on through another member;
- a method naming an exchange or queue declared through another node a moment ago
  waits until this node has applied it rather than answering 404 (or an unbind-ok that
  removed nothing);
- `x-queue-leader-locator` / the `queue-leader-locator` policy key: `balanced` puts
  the leaders of queues declared through one node on every node, `client-local` on the
  declaring node."""
import base64
import collections
import json
import os
import sys
import threading
import time
import urllib.request

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import Cluster  # noqa: E402
from harness import channel as harness_channel  # noqa: E402
from harness import eventually as poll  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

QQ = {"x-queue-type": "quorum"}


def eventually(check, timeout=30.0, what="condition"):
    """The harness's poll with a longer default (elections and catch-up)."""
    return poll(check, timeout, what)


def channel(node):
    """The harness's channel with a short heartbeat (a member node gets killed here)."""
    return harness_channel(node, heartbeat=5, blocked_connection_timeout=30)


def queue_on(node, name):
    return node.api(f"/api/queues/%2F/{name}")


def put(node, path, body):
    req = urllib.request.Request(node.http_url + path, data=json.dumps(body).encode(), method="PUT")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def delete(node, path):
    req = urllib.request.Request(node.http_url + path, method="DELETE")
    req.add_header("Authorization", "Basic " + base64.b64encode(b"guest:guest").decode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def leader_from(node, name):
    """The leader a member node knows (once it knows one)."""
    return queue_on(node, name).get("leader")


def placed(cluster, name, size):
    """The queue's members (as every node lists them), its leader, and the nodes that
    are no member, once the leader is known."""
    q = eventually(lambda: queue_on(cluster.nodes[0], name), what=f"{name} listed")
    members = q["members"]
    assert len(members) == size, q
    member = cluster.node_named(members[0])
    leader = eventually(lambda: leader_from(member, name), what=f"a leader of {name}")
    others = [n for n in cluster.nodes if n.name not in members]
    return members, leader, others


def test_balanced_puts_the_leaders_of_one_nodes_declares_on_every_node(cluster):
    # first in the module: no other quorum queue leads anywhere yet
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    args = dict(QQ, **{"x-queue-leader-locator": "balanced"})
    names = [f"bal.{i}" for i in range(6)]
    for name in names:
        ch.queue_declare(name, durable=True, arguments=args)
    leaders = {name: eventually(lambda: leader_from(n0, name), what=f"a leader of {name}") for name in names}
    # the member placed to lead is the first one, and it is the one that leads
    for name in names:
        assert queue_on(n0, name)["members"][0] == leaders[name], (name, queue_on(n0, name))
    count = collections.Counter(leaders.values())
    assert sorted(count.values()) == [2, 2, 2] and set(count) == {n.name for n in cluster.nodes}, count
    for name in names:
        ch.queue_delete(name)
    c.close()


def test_client_local_and_the_policy_key(cluster):
    n0, n1, n2 = cluster.nodes
    # client-local (the default): the declaring node leads
    c, ch = channel(n1)
    ch.queue_declare("loc.local", durable=True, arguments=dict(QQ, **{"x-queue-leader-locator": "client-local"}))
    ch.queue_declare("loc.default", durable=True, arguments=QQ)
    for name in ("loc.local", "loc.default"):
        assert eventually(lambda: leader_from(n1, name), what="a leader") == n1.name
        ch.queue_delete(name)
    c.close()
    # a policy's queue-leader-locator wins over the argument, as in RabbitMQ
    put(n0, "/api/policies/%2F/spread", {"pattern": "^pol\\.", "apply-to": "queues",
                                         "definition": {"queue-leader-locator": "balanced"}})
    try:
        eventually(lambda: any(p["name"] == "spread" for p in n2.api("/api/policies/%2F")), what="policy applied")
        c, ch = channel(n2)
        names = [f"pol.{i}" for i in range(3)]
        for name in names:
            ch.queue_declare(name, durable=True, arguments=dict(QQ, **{"x-queue-leader-locator": "client-local"}))
        leaders = {eventually(lambda: leader_from(n2, name), what="a leader") for name in names}
        assert leaders == {n.name for n in cluster.nodes}, leaders
        for name in names:
            ch.queue_delete(name)
        c.close()
    finally:
        delete(n0, "/api/policies/%2F/spread")


def test_a_quorum_queue_serves_every_operation_on_a_node_that_is_no_member(cluster):
    n0 = cluster.nodes[0]
    c0, ch0 = channel(n0)
    ch0.queue_declare("reach.one", durable=True, arguments=dict(QQ, **{"x-quorum-initial-group-size": 1}))
    members, _, others = placed(cluster, "reach.one", 1)
    assert members == [n0.name] and len(others) == 2
    a, b = others
    ca, cha = channel(a)
    # passive declare with counts, from the member
    assert cha.queue_declare("reach.one", passive=True).method.message_count == 0
    cha.confirm_delivery()
    for i in range(20):
        cha.basic_publish("", "reach.one", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert cha.queue_declare("reach.one", passive=True).method.message_count == 20
    # the management API of a node that is no member shows the member's figures
    for n in others:
        q = queue_on(n, "reach.one")
        assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (20, 20, 0), q
        assert q["leader"] == n0.name, q
        listed = [x for x in n.api("/api/queues/%2F") if x["name"] == "reach.one"]
        assert [x["messages_ready"] for x in listed] == [20], listed
    # basic.get: ack, nack with requeue (back, redelivered), reject without requeue
    m, _, body = cha.basic_get("reach.one")
    assert body == b"m0" and not m.redelivered
    cha.basic_ack(m.delivery_tag)
    m, _, body = cha.basic_get("reach.one")
    assert body == b"m1"
    cha.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = cha.basic_get("reach.one")
    assert body == b"m2"
    cha.basic_reject(m.delivery_tag, requeue=False)
    assert cha.queue_declare("reach.one", passive=True).method.message_count == 18
    # basic.consume with prefetch on the other non-member: five at a time until acked
    cb, chb = channel(b)
    chb.basic_qos(prefetch_count=5)
    held = []
    chb.basic_consume("reach.one", lambda ch, m, p, body: held.append((m, body)))
    eventually(lambda: chb.connection.process_data_events(0.1) or len(held) >= 5, what="five deliveries")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        chb.connection.process_data_events(0.1)
    assert len(held) == 5, [b for _, b in held]
    bodies = []
    deadline = time.monotonic() + 30
    while len(bodies) < 18:
        assert time.monotonic() < deadline, f"deliveries stopped after {bodies}"
        while held:
            m, body = held.pop(0)
            bodies.append(body)
            chb.basic_ack(m.delivery_tag)
        chb.connection.process_data_events(0.2)
        assert len(held) <= 5
    # m1 came back to the back of the queue (a quorum queue's requeue), redelivered
    assert sorted(bodies) == sorted([b"m1"] + [f"m{i}".encode() for i in range(3, 20)]), bodies
    cb.close()
    # purge and delete from the non-members
    for i in range(4):
        cha.basic_publish("", "reach.one", b"p")
    assert cha.queue_purge("reach.one").method.message_count == 4
    cha.basic_publish("", "reach.one", b"left")
    cb, chb = channel(b)
    assert chb.queue_delete("reach.one").method.message_count == 1
    for n in cluster.nodes:
        eventually(lambda: all(q["name"] != "reach.one" for q in n.api("/api/queues/%2F")), what=f"gone on {n.name}")
    for c in (c0, ca, cb):
        c.close()


def test_reject_publish_nacks_a_publisher_on_a_node_that_is_no_member(cluster):
    n1 = cluster.nodes[1]
    c, ch = channel(n1)
    args = dict(QQ, **{"x-quorum-initial-group-size": 2, "x-max-length": 2, "x-overflow": "reject-publish"})
    ch.queue_declare("reach.rp", durable=True, arguments=args)
    _, _, (outside,) = placed(cluster, "reach.rp", 2)
    c.close()
    c, ch = channel(outside)
    ch.confirm_delivery()
    # as RabbitMQ's quorum queues: the publish that takes the queue over its limit is
    # taken, the ones after it refused
    for i in range(3):
        ch.basic_publish("", "reach.rp", f"k{i}".encode())
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "reach.rp", b"over")
    assert ch.queue_declare("reach.rp", passive=True).method.message_count == 3
    ch.queue_delete("reach.rp")
    c.close()


def test_methods_right_after_a_declare_through_another_node(cluster):
    # declared through the metadata leader (it applies an entry as soon as it commits
    # it), used through a follower (which applies it once it hears of the commit)
    leads = eventually(lambda: [x["name"] for x in cluster.nodes[0].api("/api/nodes") if x["metadata_leader"]],
                       what="a metadata leader")
    n0 = cluster.node_named(leads[0])
    n1 = next(n for n in cluster.nodes if n is not n0)
    c0, ch0 = channel(n0)
    c1, ch1 = channel(n1)
    ch1.confirm_delivery()
    for i in range(10):
        x, q = f"race.x{i}", f"race.q{i}"
        ch0.exchange_declare(x, "direct", durable=True)
        ch1.exchange_declare(x, "direct", passive=True)
        ch0.exchange_declare(x + ".2", "direct", durable=True)
        ch1.basic_publish(x + ".2", "k", b"nowhere")  # confirmed: routed to no queue
        ch0.exchange_declare(x + ".3", "fanout", durable=True)
        ch1.exchange_bind(x + ".3", x)
        ch0.queue_declare(q, durable=True)
        assert ch1.basic_get(q)[0] is None
        ch0.queue_declare(q + ".p", durable=True)
        assert ch1.queue_purge(q + ".p").method.message_count == 0
        ch0.queue_declare(q + ".c", durable=True)
        tag = ch1.basic_consume(q + ".c", lambda *a: None)
        ch1.basic_cancel(tag)
        ch0.queue_declare(q + ".d", durable=True)
        ch1.queue_delete(q + ".d")
        ch0.queue_bind(q, x, "k")
        ch1.queue_unbind(q, x, "k")
        ch0.exchange_bind(x + ".3", x + ".2", "k")
        ch1.exchange_unbind(x + ".3", x + ".2", "k")
        # what node 1 deleted and unbound is gone for node 0 too
        eventually(lambda: all(e["name"] != q + ".d" for e in n0.api("/api/queues/%2F")), what="deleted")
        eventually(lambda: n0.api(f"/api/bindings/%2F/e/{x}/q/{q}") == [], what="queue unbound")
        eventually(lambda: n0.api(f"/api/bindings/%2F/e/{x}.2/e/{x}.3") == [], what="exchange unbound")
        assert n0.api(f"/api/bindings/%2F/e/{x}/e/{x}.3") != []
    for i in range(10):
        for q in (f"race.q{i}", f"race.q{i}.p", f"race.q{i}.c"):
            ch0.queue_delete(q)
        for x in (f"race.x{i}", f"race.x{i}.2", f"race.x{i}.3"):
            ch0.exchange_delete(x)
    c0.close()
    c1.close()


@pytest.fixture
def four():
    c = Cluster(4)
    try:
        c.start()
        yield c
    finally:
        c.close()


def test_a_member_node_killed_cancels_consumers_and_the_queue_goes_on(four):
    n0 = four.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("reach.kill", durable=True, arguments=QQ)
    members, leader, (outside,) = placed(four, "reach.kill", 3)
    assert leader == members[0] == n0.name
    c.close()
    c, ch = channel(outside)
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "reach.kill", f"a{i}".encode(), pika.BasicProperties(delivery_mode=2))
    cancelled = threading.Event()
    got = []
    ch.basic_qos(prefetch_count=3)
    ch.add_on_cancel_callback(lambda _: cancelled.set())
    ch.basic_consume("reach.kill", lambda c_, m, p, body: got.append(body))
    eventually(lambda: ch.connection.process_data_events(0.1) or len(got) >= 3, what="deliveries")
    # the member in use (the first, the leader) dies: basic.cancel
    n0.kill9()
    eventually(lambda: ch.connection.process_data_events(0.1) or cancelled.is_set(), what="basic.cancel")
    # a new leader among the other members; the queue serves through one of them, and
    # every confirmed message is there (the unacked ones redelivered)
    eventually(lambda: leader_from(four.node_named(members[1]), "reach.kill") in members[1:], what="a new leader")
    for i in range(5):
        ch.basic_publish("", "reach.kill", f"b{i}".encode(), pika.BasicProperties(delivery_mode=2))
    bodies = set()
    deadline = time.monotonic() + 30
    while len(bodies) < 15 and time.monotonic() < deadline:
        m, _, body = ch.basic_get("reach.kill", auto_ack=True)
        if m is None:
            time.sleep(0.1)
            continue
        bodies.add(body)
    assert bodies == {f"a{i}".encode() for i in range(10)} | {f"b{i}".encode() for i in range(5)}
    c.close()
