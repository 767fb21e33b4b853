"""The long Jepsen-style run on three nodes (scripts/jepsen.sh runs it): the workloads
run for `--duration` seconds while faults from `--faults` are injected in turn (each held
for `--hold` seconds, longer while a workload has not resumed through the other nodes
yet, up to FAILOVER_WAIT, then healed, then a quiet `--gap`); at the end every fault is
healed, the workloads are checked, their counts printed as JSON, and the exit code is 1
if anything acknowledged was lost or anything unexpected appeared (2 on a harness error).

Workloads (`WORKLOADS`; a class with `start()`, `stop()` and `check() -> dict` whose
dict carries `lost_count` and `unexpected_count`): `definitions`
(tests/cluster/definitions.py) and `queues` (tests/cluster/jepsen.py's Checker on the
durable quorum queue `jepsen.qq` with three members: confirming publishers with unique
ids, consumers recording deliveries, `finish()` as its check). A workload with a
`target` queue gets faults aimed at that queue's leader: the faults named `*-leader`
(and the follower of `*-follower`) alternate between the metadata leader and the queue's
leader, one fault each in turn (the `target` column of the printed log)."""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402
import netns  # noqa: E402
from definitions import DefinitionsChecker  # noqa: E402
from jepsen import Checker  # noqa: E402
from harness import Cluster  # noqa: E402


class DefinitionsWorkload:
    """tests/cluster/definitions.py as a workload."""

    def __init__(self, cluster):
        self.chk = DefinitionsChecker(cluster)

    def start(self):
        self.chk.start()

    def stop(self):
        self.chk.stop()

    def check(self):
        return self.chk.check(timeout=60)

    def failover_after(self, t, faulted):
        return self.chk.failover_after(t, faulted)


class QueuesWorkload:
    """tests/cluster/jepsen.py's Checker on a durable quorum queue with three members
    (one confirming publisher and one recording consumer per node). Faults aimed at a
    leader take this queue's leader (`target`), not the metadata leader."""

    QUEUE = "jepsen.qq"

    def __init__(self, cluster):
        self.chk = Checker(cluster, self.QUEUE, arguments={"x-queue-type": "quorum"})
        self.target = self.QUEUE

    def start(self):
        self.chk.start()

    def stop(self):
        self.chk.stop_publishing()

    def check(self):
        return self.chk.finish(quiet=3.0, timeout=120)

    def failover_after(self, t, faulted):
        return self.chk.failover_after(t, faulted)


# name -> class(cluster)
WORKLOADS = {"definitions": DefinitionsWorkload, "queues": QueuesWorkload}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=300, help="seconds of faults (default 300)")
    p.add_argument("--faults", default="kill-leader,kill-follower,stop-leader,partition-leader",
                   help=f"comma-separated, injected in random order; known: {', '.join(faults.FAULTS)}")
    p.add_argument("--workloads", default="definitions,queues", help=f"comma-separated; known: {', '.join(WORKLOADS)}")
    p.add_argument("--hold", type=float, default=5.0, help="seconds each fault lasts (default 5)")
    p.add_argument("--gap", type=float, default=3.0, help="seconds between a heal and the next fault (default 3)")
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    a.faults = [f for f in a.faults.split(",") if f]
    a.workloads = [w for w in a.workloads.split(",") if w]
    for f in a.faults:
        if f not in faults.FAULTS:
            p.error(f"unknown fault {f!r} (known: {', '.join(faults.FAULTS)})")
    for w in a.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w!r} (known: {', '.join(WORKLOADS)})")
    return a


def partitions_possible(wanted):
    """Network namespaces if a partition fault is wanted and the machine allows them;
    otherwise the partition faults are dropped with the reason printed."""
    if not any(f.startswith("partition-") for f in wanted):
        return None, wanted
    ok, why = netns.available()
    if ok:
        return netns.Net(3), wanted
    print(f"jepsen: partition faults skipped: {why}", flush=True)
    return None, [f for f in wanted if not f.startswith("partition-")]


# how long a fault is held past `--hold` while a workload has not resumed through the
# survivors yet (so its failover is measured, not cut short by the heal)
FAILOVER_WAIT = 20.0


def failovers(fault, workloads, names):
    """Each workload's failover for `fault` (None: not resumed within the wait)."""
    def took():
        return {n: w.failover_after(fault.at, fault.victim.name)
                for n, w in zip(names, workloads) if hasattr(w, "failover_after")}
    deadline = time.monotonic() + FAILOVER_WAIT
    t = took()
    while None in t.values() and time.monotonic() < deadline:
        time.sleep(0.1)
        t = took()
    return t


def run_faults(cluster, net, names, workloads, args, rng):
    """Injects faults until the duration is over; returns each one's failover time."""
    log = []
    end = time.monotonic() + args.duration
    while time.monotonic() < end and names:
        name = rng.choice(names)
        # faults aimed at a leader alternate between the metadata leader and the leader
        # of a workload's quorum queue (each fault in turn, when a workload has one)
        targets = [None] + [w.target for w in workloads if getattr(w, "target", None)]
        queue = targets[len(log) % len(targets)]
        fault = faults.inject(cluster, name, net, queue=queue)
        time.sleep(args.hold)
        took = failovers(fault, workloads, args.workloads)
        fault.heal()
        cluster.wait_formed(120)
        took = {n: None if t is None else round(t, 2) for n, t in took.items()}
        log.append({"fault": name, "target": queue or "metadata", "victim": fault.victim.name, "failover_s": took})
        print(f"jepsen: {name} ({queue or 'metadata'} leader) on {fault.victim.name}: "
              + ", ".join(f"{n} resumed through a survivor after {'-' if t is None else f'{t:.2f}s'}"
                          for n, t in took.items()), flush=True)
        time.sleep(args.gap)
    return log


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    rng = random.Random(args.seed)
    net, names = partitions_possible(args.faults)
    cluster = Cluster(3, net=net)
    try:
        cluster.start()
        workloads = [WORKLOADS[w](cluster) for w in args.workloads]
        for w in workloads:
            w.start()
        log = run_faults(cluster, net, names, workloads, args, rng)
        for w in workloads:
            w.stop()
        reports = {name: w.check() for name, w in zip(args.workloads, workloads)}
        print(json.dumps({"faults": log, "workloads": reports}, indent=1, default=str), flush=True)
        bad = sum(r["lost_count"] + r["unexpected_count"] + r.get("resurrected_count", 0) for r in reports.values())
        return 1 if bad else 0
    finally:
        for n in cluster.nodes:
            n.kill9()
        cluster.close()
        if net is not None:
            net.close()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a harness failure, not a checker verdict
        print(f"jepsen: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
