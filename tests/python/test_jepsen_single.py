"""The cluster checker (tests/cluster/jepsen.py) on a cluster of one: confirming
publishers and consumers against a durable queue while the node is killed with SIGKILL
and restarted; nothing confirmed may be lost and nothing received that was never sent.
The same checker runs the three-node fault schedules once the cluster is served."""
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import Cluster  # noqa: E402
from jepsen import Checker  # noqa: E402

pytestmark = pytest.mark.ours_only


def test_kill9_of_the_only_node_loses_nothing_confirmed():
    cluster = Cluster(1)
    try:
        cluster.start()
        chk = Checker(cluster, "jepsen-one")
        chk.start()
        node = cluster.nodes[0]
        for _ in range(3):
            time.sleep(1.5)
            node.kill9()
            time.sleep(0.3)
            node.start()
        time.sleep(1.5)
        r = chk.finish()
        assert r["acked"] > 100, r
        assert r["lost_count"] == 0, r
        assert r["unexpected_count"] == 0, r
        assert r["received"] >= r["acked"], r
    finally:
        cluster.close()


def test_the_checker_counts_what_a_transient_queue_loses_in_a_kill():
    """The checker is not vacuous: confirmed messages of a non-durable queue are gone
    after a kill -9, and it says so."""
    cluster = Cluster(1)
    try:
        cluster.start()
        chk = Checker(cluster, "jepsen-transient", durable=False, publishers=1)
        chk.start(consumers=False)
        deadline = time.monotonic() + 10
        while len(chk.acked) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        chk.stop_publishing()
        time.sleep(0.3)
        cluster.nodes[0].kill9()
        cluster.nodes[0].start()
        chk.declare()
        r = chk.finish(quiet=1.0)
        assert r["acked"] >= 50 and r["lost_count"] == r["acked"] and r["received"] == 0, r
    finally:
        cluster.close()
