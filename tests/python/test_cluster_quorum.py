"""Quorum queues with three members on a three-node cluster (issue 16, design §3, step 7
server part): the declaring node picks the members (every node of a three-node
cluster), each node runs its member and serves clients, whichever node leads; a
confirm waits for the group's commit; a publisher on a follower gets its basic.nack
for a reject-publish overflow; when the leader's node is killed a new leader takes
over with nothing confirmed lost; a consumer's node killed gives its unacked messages
back; a member that was down catches up."""
import os
import sys
import time

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import eventually as poll  # noqa: E402
from jepsen import Checker  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

QQ = {"x-queue-type": "quorum"}


def eventually(check, timeout=30.0, what="condition"):
    """The harness's poll with this file's longer default (elections and catch-up)."""
    return poll(check, timeout, what)



def connect(node):
    return pika.BlockingConnection(pika.ConnectionParameters(
        node.host, node.port, connection_attempts=3, heartbeat=5, blocked_connection_timeout=30))


def channel(node):
    conn = connect(node)
    return conn, conn.channel()


def queue_on(node, name):
    return node.api(f"/api/queues/%2F/{name}")


def leader_known(cluster, name, exclude=()):
    """The leader every live node reports, once they agree (and it is not excluded)."""
    seen = set()
    for n in cluster.nodes:
        if n.alive():
            seen.add(queue_on(n, name).get("leader"))
    if len(seen) == 1:
        (leader,) = seen
        if leader and leader not in exclude:
            return leader
    return None


def get_one(ch, queue, auto_ack=False):
    """basic.get: the message, or None when the queue is empty."""
    m, props, body = ch.basic_get(queue, auto_ack=auto_ack)
    return (m, props, body) if m is not None else None


def drain(ch, queue, want, timeout=30.0):
    """basic.get until `want` messages came (acked), returning their bodies."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            time.sleep(0.05)
            continue
        got.append(body)
    return got


def test_members_on_every_node_and_use_from_each(cluster):
    n0, n1, n2 = cluster.nodes
    names = sorted(n.name for n in cluster.nodes)
    c0, ch0 = channel(n0)
    ch0.queue_declare("qq.use", durable=True, arguments=QQ)
    for node in cluster.nodes:
        q = eventually(lambda: queue_on(node, "qq.use"), what=f"queue listed on {node.name}")
        assert q["type"] == "quorum"
        assert sorted(q["members"]) == names and q["members"][0] == n0.name, q
        eventually(lambda: sorted(queue_on(node, "qq.use")["online"]) == names, what="all online")
    leader = eventually(lambda: leader_known(cluster, "qq.use"), what="one leader on every node")
    for node in cluster.nodes:
        q = queue_on(node, "qq.use")
        assert q["node"] == q["leader"] == leader
    # publish with confirms on node 2
    c1, ch1 = channel(n1)
    ch1.confirm_delivery()
    for i in range(20):
        ch1.basic_publish("", "qq.use", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
    eventually(lambda: all(queue_on(n, "qq.use")["messages_ready"] == 20 for n in cluster.nodes),
               what="20 ready on every member")
    # consume and ack 10 on node 3
    c2, ch2 = channel(n2)
    ch2.basic_qos(prefetch_count=5)
    got = []
    for m, _, body in ch2.consume("qq.use", inactivity_timeout=10):
        assert m is not None, f"deliveries stopped after {got}"
        got.append(body)
        ch2.basic_ack(m.delivery_tag)
        if len(got) == 10:
            break
    # pika's cancel requeues what it holds beyond them (to the back, as RabbitMQ's
    # quorum queues requeue)
    ch2.cancel()
    assert got == [f"m{i}".encode() for i in range(10)]
    # get on node 1 the other 10
    assert sorted(drain(ch0, "qq.use", 10)) == sorted(f"m{i}".encode() for i in range(10, 20))
    assert ch0.basic_get("qq.use")[0] is None
    # a nack with requeue on node 3 brings it back, redelivered, to a get on node 1
    ch1.basic_publish("", "qq.use", b"again")
    m, _, body = eventually(lambda: get_one(ch2, "qq.use"), what="get on node 3")
    assert body == b"again" and not m.redelivered
    ch2.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = eventually(lambda: get_one(ch0, "qq.use", auto_ack=True), what="get on node 1")
    assert body == b"again" and m.redelivered
    for c in (c0, c1, c2):
        c.close()


def test_purge_and_delete_from_a_node_that_does_not_lead(cluster):
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("qq.pd", durable=True, arguments=QQ)
    leader = eventually(lambda: leader_known(cluster, "qq.pd"), what="a leader")
    other = next(n for n in cluster.nodes if n.name != leader)
    c.close()
    c, ch = channel(other)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "qq.pd", b"p")
    assert ch.queue_purge("qq.pd").method.message_count == 5
    eventually(lambda: all(queue_on(n, "qq.pd")["messages"] == 0 for n in cluster.nodes), what="purged everywhere")
    ch.basic_publish("", "qq.pd", b"left")
    assert ch.queue_delete("qq.pd").method.message_count == 1
    c.close()
    for n in cluster.nodes:
        eventually(lambda: all(q["name"] != "qq.pd" for q in n.api("/api/queues/%2F")), what=f"gone on {n.name}")
    # the name is free again: a new queue of it starts empty
    c, ch = channel(cluster.nodes[2])
    ch.queue_declare("qq.pd", durable=True, arguments=QQ)
    assert ch.queue_declare("qq.pd", durable=True, passive=True).method.message_count == 0
    ch.queue_delete("qq.pd")
    c.close()


def test_reject_publish_nacks_a_publisher_on_a_follower(cluster):
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    args = dict(QQ, **{"x-max-length": 3, "x-overflow": "reject-publish"})
    ch.queue_declare("qq.rp", durable=True, arguments=args)
    leader = eventually(lambda: leader_known(cluster, "qq.rp"), what="a leader")
    c.close()
    follower = next(n for n in cluster.nodes if n.name != leader)
    c, ch = channel(follower)
    ch.confirm_delivery()
    # as RabbitMQ's quorum queues: the publish that takes the queue over its limit is
    # taken, the ones after it are refused
    for i in range(4):
        ch.basic_publish("", "qq.rp", f"k{i}".encode())
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", "qq.rp", b"over")
    assert ch.queue_declare("qq.rp", durable=True, passive=True).method.message_count == 4
    ch.queue_delete("qq.rp")
    c.close()


def test_a_message_of_the_largest_size_replicates(cluster):
    # max_message_size (16 MiB) plus the entry's own fields is above the transport's
    # default frame: the node raises its frame limit to fit it
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("qq.big", durable=True, arguments=QQ)
    leader = eventually(lambda: leader_known(cluster, "qq.big"), what="a leader")
    c.close()
    follower, other = [n for n in cluster.nodes if n.name != leader]
    body = os.urandom(16 * 1024 * 1024 - 4096)
    c, ch = channel(follower)
    ch.confirm_delivery()
    ch.basic_publish("", "qq.big", body, pika.BasicProperties(delivery_mode=2))
    c.close()
    eventually(lambda: all(queue_on(n, "qq.big")["messages_ready"] == 1 for n in cluster.nodes),
               what="on every member")
    c, ch = channel(other)
    m, _, got = ch.basic_get("qq.big", auto_ack=True)
    assert m is not None and got == body
    ch.queue_delete("qq.big")
    c.close()


def test_kill_of_the_leader_loses_nothing_confirmed(cluster):
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("qq.kill", durable=True, arguments=QQ)
    c.close()
    leader = eventually(lambda: leader_known(cluster, "qq.kill"), what="a leader")
    victim = cluster.node_named(leader)
    checker = Checker(cluster, "qq.kill", arguments=QQ, publishers=2)
    checker.start()
    eventually(lambda: len(checker.acked) > 200 and sum(checker.received.values()) > 100,
               what="traffic before the fault")
    victim.kill9()
    killed = time.monotonic()
    survivor = next(n for n in cluster.nodes if n.alive())
    new = eventually(lambda: leader_known(cluster, "qq.kill", exclude=(victim.name,)), timeout=30,
                     what="a new leader")
    with checker.lock:
        before = len(checker.acked)
    eventually(lambda: len(checker.acked) > before + 50, timeout=30, what="confirms after the fault")
    failover = time.monotonic() - killed
    print(f"\nfailover: new leader {new}, confirms flowing again {failover:.2f}s after kill -9 of {victim.name}")
    victim.start()
    cluster.wait_formed()
    report = checker.finish(quiet=3.0, timeout=90)
    print(report)
    assert report["lost_count"] == 0, report
    assert report["unexpected_count"] == 0, report
    assert report["acked"] > 250, report
    c, ch = channel(survivor)
    ch.queue_delete("qq.kill")
    c.close()


def test_kill_of_a_consumers_node_returns_its_unacked_messages(cluster):
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("qq.down", durable=True, arguments=QQ)
    c.close()
    leader = eventually(lambda: leader_known(cluster, "qq.down"), what="a leader")
    holder, other = [n for n in cluster.nodes if n.name != leader]
    c, ch = channel(cluster.node_named(leader))
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "qq.down", f"d{i}".encode())
    c.close()
    # a consumer on `holder` takes all ten and acks none
    hc, hch = channel(holder)
    hch.basic_qos(prefetch_count=10)
    held = []
    for m, _, body in hch.consume("qq.down", inactivity_timeout=10):
        assert m is not None
        held.append(body)
        if len(held) == 10:
            break
    eventually(lambda: queue_on(other, "qq.down")["messages_unacknowledged"] == 10, what="10 unacked")
    holder.kill9()
    # they come back to a consumer on another node, redelivered
    oc, och = channel(other)
    got = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        m, _, body = och.basic_get("qq.down", auto_ack=True)
        if m is None:
            time.sleep(0.1)
            continue
        assert m.redelivered, body
        got.append(body)
    assert sorted(got) == sorted(held), (got, held)
    holder.start()
    cluster.wait_formed()
    och.queue_delete("qq.down")
    oc.close()


def test_a_restarted_member_catches_up_and_leads(cluster):
    n0 = cluster.nodes[0]
    c, ch = channel(n0)
    ch.queue_declare("qq.catch", durable=True, arguments=QQ)
    c.close()
    leader = cluster.node_named(eventually(lambda: leader_known(cluster, "qq.catch"), what="a leader"))
    lagger, third = [n for n in cluster.nodes if n is not leader]

    def publish(prefix, n):
        c, ch = channel(leader)
        ch.confirm_delivery()
        for i in range(n):
            ch.basic_publish("", "qq.catch", f"{prefix}{i}".encode(), pika.BasicProperties(delivery_mode=2))
        c.close()

    # published while the lagger is down: committed by the leader and the third
    lagger.kill9()
    publish("a", 100)
    lagger.start()
    cluster.wait_formed()
    eventually(lambda: queue_on(lagger, "qq.catch")["messages_ready"] == 100, what="the lagger caught up")
    # then only the lagger has what comes while the third is down, so once the leader
    # goes the third cannot win an election (its log is behind): the lagger leads
    third.kill9()
    publish("b", 50)
    leader.kill9()
    third.start()
    eventually(third.serves_amqp, what="the third serves clients")
    eventually(lambda: leader_known(cluster, "qq.catch", exclude=(leader.name,)) == lagger.name,
               what="the lagger leads")
    c, ch = channel(third)
    got = drain(ch, "qq.catch", 150)
    assert got == [f"a{i}".encode() for i in range(100)] + [f"b{i}".encode() for i in range(50)]
    assert ch.basic_get("qq.catch")[0] is None
    c.close()
    leader.start()
    cluster.wait_formed()
    c, ch = channel(leader)
    ch.queue_delete("qq.catch")
    c.close()
