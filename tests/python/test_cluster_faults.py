"""Fault schedules on three nodes for the cluster's definitions (issue 16, step 8): while
one client per node declares and deletes durable queues, exchanges and bindings
(tests/cluster/definitions.py), the metadata leader is killed with SIGKILL, a follower
is, the leader is frozen with SIGSTOP for longer than an election, or the leader is cut
off the network (network namespaces; skipped where the machine has none). Each fault
heals, and then every node must list every acknowledged definition (lost = 0), nothing
that was never asked for (unexpected = 0), and no acknowledged delete may come back.
Failover time (fault to the first declare-ok through a surviving node) is printed and
bounded; the survivors' /api/nodes must show the dead node down and the new leader.
Same name, different arguments through two nodes at once: at most one is declare-ok,
and every node lists that one (no split brain)."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
import netns  # noqa: E402
from definitions import DefinitionsChecker, conflicting_declares, finish_conflict, queue_arguments  # noqa: E402
from faults import eventually, leader, leader_seen_by, new_leader_among, shown_down  # noqa: E402
from harness import Cluster  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

# fault to first declare-ok through a survivor: an election is 1-2 s, plus detection
FAILOVER_BOUND = 10.0
# SIGSTOP longer than an election (elections time out after 1-2 s)
FREEZE_SECONDS = 4.0


def failover(chk, t_fault, faulted):
    """Waits for the first declare-ok asked after the fault through a survivor; prints
    and returns the seconds it took."""
    took = eventually(lambda: (lambda v: None if v is None else (v,))(chk.failover_after(t_fault, faulted)),
                      timeout=FAILOVER_BOUND + 5, what="a declare-ok through a survivor")[0]
    print(f"\nfailover: {took:.2f}s to the first declare-ok through a survivor")
    assert took < FAILOVER_BOUND
    return took


def settle_and_check(cluster, chk, more=30):
    """After the heal: the cluster formed again, the workload goes on for `more`
    acknowledged definitions, stops, and every node's listing is checked."""
    cluster.wait_formed(60)
    base = chk.acked_count()
    eventually(lambda: chk.acked_count() >= base + more, timeout=30, what="declares after the heal")
    chk.stop()
    r = chk.check()
    print(f"definitions: {r}")
    assert r["nodes_agree"], r
    assert r["lost_count"] == 0, r
    assert r["unexpected_count"] == 0, r
    assert r["resurrected_count"] == 0, r
    assert r["acked"] > 60, r
    return r


@pytest.fixture
def cluster(fresh_cluster):
    """A fresh three-node cluster per schedule (conftest's `fresh_cluster`)."""
    return fresh_cluster


def started(cluster, warmup=30):
    chk = DefinitionsChecker(cluster)
    chk.start()
    eventually(lambda: chk.acked_count() >= warmup, what="the workload under way")
    return chk


def test_kill9_of_the_metadata_leader(cluster):
    old = leader(cluster)
    survivors = [n for n in cluster.nodes if n is not old]
    chk = started(cluster)
    t0 = time.monotonic()
    old.kill9()
    failover(chk, t0, old.name)
    new_leader_among(survivors, old)
    shown_down(survivors, old)
    old.start()
    settle_and_check(cluster, chk)


def test_kill9_of_a_follower(cluster):
    lead = leader(cluster)
    victim = next(n for n in cluster.nodes if n is not lead)
    survivors = [n for n in cluster.nodes if n is not victim]
    chk = started(cluster)
    t0 = time.monotonic()
    victim.kill9()
    failover(chk, t0, victim.name)
    shown_down(survivors, victim)
    assert {leader_seen_by(n) for n in survivors} == {lead.name}
    victim.start()
    settle_and_check(cluster, chk)


def test_sigstop_of_the_leader_longer_than_an_election(cluster):
    old = leader(cluster)
    survivors = [n for n in cluster.nodes if n is not old]
    chk = started(cluster)
    t0 = []
    # the split-brain probe: one declare waits in the frozen leader's socket, the same
    # name with other arguments goes through a survivor
    out, ts, conns = conflicting_declares(old, survivors[0], f"split-{chk.tag}", {"x-max-length": 10},
                                          {"x-max-length": 20}, ready=lambda: (old.stop(), t0.append(time.monotonic())))
    try:
        failover(chk, t0[0], old.name)
        new = new_leader_among(survivors, old)
        # frozen for longer than an election: a time-based fault, so a sleep
        time.sleep(max(0.0, FREEZE_SECONDS - (time.monotonic() - t0[0])))
    finally:
        old.cont()
    # the old leader steps down and follows the new one
    eventually(lambda: leader_seen_by(old) == new, timeout=FAILOVER_BOUND, what="the old leader stepping down")
    finish_conflict(ts, conns)
    print(f"split probe: through the frozen leader {out[0]!r}, through a survivor {out[1]!r}")
    assert out.count("ok") <= 1, out
    assert out[1] == "ok", out
    assert out[0] == 406, out
    for n in cluster.nodes:
        assert eventually(lambda: queue_arguments(n, f"split-{chk.tag}"), what="the probe queue") == {"x-max-length": 20}
    settle_and_check(cluster, chk)


def test_conflicting_declares_through_two_nodes_have_one_winner(cluster):
    a, b, _ = cluster.nodes
    tag = f"split{os.getpid()}"
    for i in range(10):
        out, ts, conns = conflicting_declares(a, b, f"{tag}.{i}", {"x-max-length": 1}, {"x-max-length": 2})
        finish_conflict(ts, conns)
        assert sorted(map(str, out)) == ["406", "ok"], out
        winner = {"x-max-length": 1 if out[0] == "ok" else 2}
        for n in cluster.nodes:
            assert eventually(lambda: queue_arguments(n, f"{tag}.{i}"), what="the queue") == winner


def test_a_partition_isolating_the_leader():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    net = netns.Net(3)
    cluster = Cluster(3, net=net)
    try:
        cluster.start()
        old = leader(cluster)
        survivors = [n for n in cluster.nodes if n is not old]
        chk = started(cluster)
        t0 = time.monotonic()
        net.cut(old.index)
        failover(chk, t0, old.name)
        new_leader_among(survivors, old)
        # its packets are dropped, its sockets stay open: the links' liveness timeout
        # (--cluster-link-timeout, 5 s) shows it down
        shown_down(survivors, old)
        net.heal(old.index)
        eventually(lambda: leader_seen_by(old) not in (None, old.name), timeout=30,
                   what="the isolated leader following the new one")
        settle_and_check(cluster, chk)
    finally:
        for n in cluster.nodes:
            n.kill9()
        cluster.close()
        net.close()
