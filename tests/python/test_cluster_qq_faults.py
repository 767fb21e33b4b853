"""Fault schedules on a quorum queue with three members (issue 16, step 8): while the
Jepsen checker (tests/cluster/jepsen.py: a confirming publisher and a recording consumer
per node) runs on the queue, the node of one of its followers is killed with SIGKILL,
the node of its leader is frozen with SIGSTOP for longer than an election, or the
leader's node is cut off the network (network namespaces; skipped where the machine
has none). Each schedule runs on a fresh cluster, heals the fault, drains the queue and
checks: lost = 0 (nothing confirmed missing), unexpected = 0 (nothing received that was
never sent); duplicates are printed. Failover is measured and bounded: fault to the
survivors agreeing on a new leader, and fault to confirms flowing again."""
import os
import sys
import time

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
import netns  # noqa: E402
from faults import eventually, queue_leader, queue_leader_seen_by  # noqa: E402
from harness import Cluster, channel  # noqa: E402
from jepsen import Checker  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

QQ = {"x-queue-type": "quorum"}
# fault to a new queue leader among the survivors: detection (election timeout 1.5-3 s)
# plus the election, with room for a loaded debug build
NEW_LEADER_BOUND = 10.0
# fault to confirms flowing again through the survivors
CONFIRMS_BOUND = 15.0
# SIGSTOP and partitions last longer than an election (elections time out after 1.5-3 s)
HOLD_SECONDS = 5.0


def started(cluster, name):
    """Declares quorum queue `name` (members on every node), waits for its leader, and
    starts the checker on it with traffic under way; returns (checker, leader node)."""
    conn, ch = channel(cluster.nodes[0])
    ch.queue_declare(name, durable=True, arguments=QQ)
    conn.close()
    lead = queue_leader(cluster, name)
    chk = Checker(cluster, name, arguments=QQ)
    chk.start()
    eventually(lambda: len(chk.acked) > 150 and sum(chk.received.values()) > 50, timeout=30,
               what="traffic before the fault")
    return chk, lead


def confirms_resume(chk, t_fault, more=50):
    """Waits until `more` publishes were confirmed after now; returns the seconds from
    the fault to then."""
    with chk.lock:
        base = len(chk.acked)
    eventually(lambda: len(chk.acked) >= base + more, timeout=CONFIRMS_BOUND + 5,
               what=f"{more} confirms after the fault")
    return time.monotonic() - t_fault


def new_leader(cluster, queue, old, survivors, t_fault):
    """Waits until the survivors agree on a leader other than `old`; prints and bounds
    the seconds from the fault to then."""
    new = queue_leader(cluster, queue, timeout=NEW_LEADER_BOUND + 10, exclude=(old.name,), among=survivors)
    took = time.monotonic() - t_fault
    print(f"\nfailover: {new.name} leads {queue} {took:.2f}s after the fault on {old.name}")
    assert took < NEW_LEADER_BOUND, took
    return new, took


def follows(node, queue, leader, timeout=30.0):
    """Waits until `node` (healed) names `leader` as the queue's leader."""
    eventually(lambda: queue_leader_seen_by(node, queue) == leader.name, timeout=timeout,
               what=f"{node.name} following {leader.name}")


def checked(cluster, chk, queue):
    """After the heal: the cluster formed again, confirms flow, then the checker drains
    and its report is printed and checked; every member applied the end of the log."""
    cluster.wait_formed(60)
    confirms_resume(chk, time.monotonic(), more=30)
    report = chk.finish(quiet=3.0, timeout=90)
    print(f"checker: {report}")
    print(f"duplicates: {report['duplicated']}")
    assert report["lost_count"] == 0, report
    assert report["unexpected_count"] == 0, report
    assert report["acked"] > 200, report
    # every member has the whole log: a marker published now is ready on all three
    conn, ch = channel(cluster.nodes[0])
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", queue, f"marker{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    for n in cluster.nodes:
        eventually(lambda: n.api(f"/api/queues/%2F/{queue}")["messages_ready"] == 10, timeout=30,
                   what=f"{n.name} caught up")
    return report


def leader_lost(cluster, chk, queue, old, fault, heal, what):
    """The leader's node `old` faulted (`fault`) for longer than an election: the
    survivors elect a new leader and confirms resume within the bound; then `heal`, and
    `old` follows the new leader and the checker's counts hold."""
    survivors = [n for n in cluster.nodes if n is not old]
    t0 = time.monotonic()
    fault()
    try:
        new, _ = new_leader(cluster, queue, old, survivors, t0)
        took = confirms_resume(chk, t0)
        print(f"confirms through the survivors {took:.2f}s after {what} {old.name}")
        assert took < CONFIRMS_BOUND, took
        # faulted for longer than an election: a time-based fault, so a sleep
        time.sleep(max(0.0, HOLD_SECONDS - (time.monotonic() - t0)))
    finally:
        heal()
    follows(old, queue, new)
    checked(cluster, chk, queue)


def test_kill9_of_a_follower_node(fresh_cluster):
    cluster = fresh_cluster
    chk, lead = started(cluster, "qq.kf")
    victim = next(n for n in cluster.nodes if n is not lead)
    survivors = [n for n in cluster.nodes if n is not victim]
    t0 = time.monotonic()
    victim.kill9()
    took = confirms_resume(chk, t0)
    print(f"\nconfirms after kill -9 of follower {victim.name}: {took:.2f}s")
    assert took < CONFIRMS_BOUND, took
    # the leader stays
    assert queue_leader(cluster, "qq.kf", among=survivors) is lead
    victim.start()
    follows(victim, "qq.kf", lead)
    checked(cluster, chk, "qq.kf")


def test_sigstop_of_the_leader_node_longer_than_an_election(fresh_cluster):
    cluster = fresh_cluster
    chk, old = started(cluster, "qq.stop")
    leader_lost(cluster, chk, "qq.stop", old, old.stop, old.cont, "SIGSTOP of")


def test_a_partition_isolating_the_leader_node():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    net = netns.Net(3)
    cluster = Cluster(3, net=net)
    try:
        cluster.start()
        chk, old = started(cluster, "qq.part")
        leader_lost(cluster, chk, "qq.part", old, lambda: net.cut(old.index),
                    lambda: net.heal(old.index), "cutting off")
    finally:
        for n in cluster.nodes:
            n.kill9()
        cluster.close()
        net.close()
