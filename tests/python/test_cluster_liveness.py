"""Liveness of the links between nodes (issue 16; docs/design/cluster.md §5): a node
frozen with SIGSTOP keeps its sockets open, so only the links' heartbeats and their
timeout (--cluster-link-timeout, 5 s by default) tell the others it is gone. The
survivors must show it running=false within the timeout (plus the time to look), and
running=true again after SIGCONT; and what it held must come back: the unacked
deliveries of its consumer on a classic queue of another node are requeued at the
queue's home and delivered to a consumer on the third node, and once thawed, the frozen
node's consumer gets basic.cancel (its home forgot it)."""
import os
import sys
import time

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from faults import leader, shown_down  # noqa: E402
from harness import channel, eventually  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

# the default --cluster-link-timeout
LINK_TIMEOUT = 5.0
# a loaded machine's scheduling, the 250 ms watchers and the API polls on top of it
SLACK = 5.0


@pytest.fixture
def cluster(fresh_cluster):
    """Three new nodes per test (conftest's `fresh_cluster`): each freezes one."""
    return fresh_cluster


def running_seen_by(node, name):
    return next(n for n in node.api("/api/nodes", timeout=3) if n["name"] == name)["running"]


class Collector:
    """Deliveries of a consumer, in arrival order, and the tags it was cancelled by."""

    def __init__(self, ch):
        self.ch = ch
        self.got = []
        self.cancelled = []

    def __call__(self, ch, method, props, body):
        self.got.append((method, body))

    def on_cancel(self, frame):
        self.cancelled.append(frame.method.consumer_tag)

    def pump_until(self, done, timeout, what):
        """Processes the connection's events until `done()` or the deadline."""
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"{what} not within {timeout}s ({len(self.got)} deliveries)"
            self.ch.connection.process_data_events(time_limit=0.1)


def test_a_frozen_node_is_shown_down_within_the_link_timeout_and_up_after_it_thaws(cluster):
    lead = leader(cluster)
    victim = next(n for n in cluster.nodes if n is not lead)
    survivors = [n for n in cluster.nodes if n is not victim]
    for s in survivors:
        assert running_seen_by(s, victim.name) is True
    t0 = time.monotonic()
    victim.stop()
    try:
        shown_down(survivors, victim, timeout=LINK_TIMEOUT + SLACK)
        took = time.monotonic() - t0
        print(f"\nfrozen node shown down after {took:.2f}s (link timeout {LINK_TIMEOUT}s)")
        # not long before the timeout (heartbeats and Raft's traffic came up to a
        # heartbeat before the freeze): a quiet link is not a dead one
        assert took > LINK_TIMEOUT * 0.6, took
        # and it stays down while frozen (redials reach only its kernel's backlog)
        assert all(running_seen_by(s, victim.name) is False for s in survivors)
    finally:
        victim.cont()
    for s in survivors:
        eventually(lambda: running_seen_by(s, victim.name) is True, timeout=LINK_TIMEOUT + SLACK,
                   what=f"{victim.name} running again on {s.name}")
    cluster.wait_formed(30)
    # and it serves again: a declare through it is seen on the others
    conn, ch = channel(victim)
    ch.queue_declare("live.after-thaw", durable=True)
    conn.close()
    for s in survivors:
        eventually(lambda: any(q["name"] == "live.after-thaw" for q in s.api("/api/queues/%2F")),
                   what=f"the declare on {s.name}")


def test_unacked_deliveries_of_a_frozen_consumer_node_come_back_to_another_consumer(cluster):
    home, frozen, third = cluster.nodes
    name = "live.requeue"
    conn, ch = channel(home)
    ch.queue_declare(name, durable=True)
    ch.confirm_delivery()
    bodies = [f"m{i}" for i in range(10)]
    for b in bodies:
        ch.basic_publish("", name, b.encode(), pika.BasicProperties(delivery_mode=2), mandatory=True)
    conn.close()
    for n in (frozen, third):
        eventually(lambda: any(q["name"] == name for q in n.api("/api/queues/%2F")), what=f"{name} on {n.name}")

    # the frozen node's consumer holds all ten, unacked
    fconn, fch = channel(frozen)
    fch.basic_qos(prefetch_count=20)
    held = Collector(fch)
    fch.add_on_cancel_callback(held.on_cancel)
    ftag = fch.basic_consume(name, held)
    held.pump_until(lambda: len(held.got) == 10, 20, "ten deliveries on the node to freeze")
    eventually(lambda: home.api(f"/api/queues/%2F/{name}")["messages_unacknowledged"] == 10,
               what="ten unacked at the home")

    # a consumer on the third node waits for them
    tconn, tch = channel(third)
    late = Collector(tch)
    tch.basic_consume(name, late)
    t0 = time.monotonic()
    frozen.stop()
    try:
        late.pump_until(lambda: len(late.got) >= 10, LINK_TIMEOUT + SLACK + 5, "the requeued messages on the third node")
        took = time.monotonic() - t0
        print(f"\nunacked deliveries of the frozen node back after {took:.2f}s")
        assert sorted(b.decode() for _, b in late.got) == sorted(bodies)
        assert all(m.redelivered for m, _ in late.got)
        for m, _ in late.got:
            tch.basic_ack(m.delivery_tag)
    finally:
        frozen.cont()
    eventually(lambda: home.api(f"/api/queues/%2F/{name}")["messages"] == 0, what="the queue drained at the home")
    # thawed, the node finds its link to the home was lost: its consumer is cancelled
    held.pump_until(lambda: held.cancelled == [ftag], LINK_TIMEOUT + SLACK, "basic.cancel on the thawed node")
    # its late acks settle nothing and are no channel error
    fch.basic_ack(held.got[-1][0].delivery_tag, multiple=True)
    fch.basic_qos(prefetch_count=20)
    assert fch.is_open
    fconn.close()
    cluster.wait_formed(30)
    q = home.api(f"/api/queues/%2F/{name}")
    assert (q["messages"], q["consumers"]) == (0, 1), q
    tconn.close()
