"""The reusable fault machinery of the cluster tests (issue 16, step 8): finding the
metadata leader, injecting a fault into a node and healing it, and the checks every
schedule makes afterwards (the survivors agree on a new leader, show the dead node
down). Workload-agnostic: the definitions schedules (tests/python/test_cluster_faults.py),
scripts/jepsen.sh and, next, the quorum-queue schedules use the same faults.

Faults by name (`FAULTS`):

  kill-leader       SIGKILL of the metadata leader, restarted on heal
  kill-follower     SIGKILL of a follower, restarted on heal
  stop-leader       SIGSTOP of the leader (held by the caller for longer than an
                    election), SIGCONT on heal
  partition-leader  the leader cut off the network (needs a cluster on netns.Net)
  partition-follower a follower cut off the network (likewise)

"Leader" is the metadata leader, or with `queue=` the leader of that quorum queue
(`queue_leader`): the quorum-queue schedules (tests/python/test_cluster_qq_faults.py)
and longrun.py's `queues` workload aim the same faults at a queue's leader node."""
import time

from harness import eventually  # noqa: F401 (the schedules import it from here)


def leader_seen_by(node):
    """The metadata leader `node`'s /api/nodes names (None if it names none)."""
    return next((n["name"] for n in node.api("/api/nodes", timeout=3) if n["metadata_leader"]), None)


def leader(cluster, timeout=20.0):
    """The metadata leader every live node agrees on (waits for it)."""
    def agreed():
        seen = {leader_seen_by(n) for n in cluster.nodes if n.alive()}
        return seen.pop() if len(seen) == 1 and None not in seen else None
    return cluster.node_named(eventually(agreed, timeout=timeout, what="one metadata leader"))


def new_leader_among(survivors, old, timeout=10.0):
    """Waits until every survivor's /api/nodes names the same leader, not `old`."""
    def agreed():
        seen = {leader_seen_by(n) for n in survivors}
        one = seen.pop() if len(seen) == 1 else None
        return one if one not in (None, old.name) else None
    return eventually(agreed, timeout=timeout, what=f"a new leader instead of {old.name}")


def shown_down(survivors, dead, timeout=20.0):
    """Waits until every survivor's /api/nodes lists `dead` with running=false."""
    def down():
        return all(next(n for n in s.api("/api/nodes", timeout=3) if n["name"] == dead.name)["running"] is False
                   for s in survivors)
    eventually(down, timeout=timeout, what=f"{dead.name} shown down")


def queue_leader_seen_by(node, queue, vhost="%2F"):
    """The leader of quorum queue `queue` that `node`'s /api/queues names (None if none)."""
    return node.api(f"/api/queues/{vhost}/{queue}", timeout=3).get("leader")


def queue_leader(cluster, queue, timeout=20.0, exclude=(), among=None):
    """The node leading quorum queue `queue` as every node of `among` (default: every
    live node) reports it, once they agree (and it is not one of the names in
    `exclude`); waits for it. Pass the survivors as `among` while a node is frozen or
    cut off: its API does not answer."""
    def agreed():
        seen = {queue_leader_seen_by(n, queue) for n in (among or cluster.nodes) if n.alive()}
        one = seen.pop() if len(seen) == 1 else None
        return one if one is not None and one not in exclude else None
    return cluster.node_named(eventually(agreed, timeout=timeout, what=f"one leader of {queue}"))


class Fault:
    """One injected fault: `victim` is the node it hit, `heal()` undoes it."""

    def __init__(self, name, victim, heal, takes_leader):
        self.name = name
        self.victim = victim
        self._heal = heal
        self.takes_leader = takes_leader
        self.at = time.monotonic()

    def heal(self):
        self._heal()


def inject(cluster, name, net=None, queue=None):
    """Injects the fault `name` (see `FAULTS`) and returns it. "Leader" is the metadata
    leader, or the leader of quorum queue `queue` when one is given."""
    lead = leader(cluster) if queue is None else queue_leader(cluster, queue)
    follower = next(n for n in cluster.nodes if n is not lead)
    victim = lead if name.endswith("-leader") else follower
    if name.startswith("kill-"):
        victim.kill9()
        return Fault(name, victim, victim.start, victim is lead)
    if name == "stop-leader":
        victim.stop()
        return Fault(name, victim, victim.cont, True)
    if name.startswith("partition-"):
        if net is None:
            raise ValueError(f"{name} needs a cluster on network namespaces")
        net.cut(victim.index)
        return Fault(name, victim, lambda: net.heal(victim.index), victim is lead)
    raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")


FAULTS = ("kill-leader", "kill-follower", "stop-leader", "partition-leader", "partition-follower")
