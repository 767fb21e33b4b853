"""Network namespaces for the cluster tests' partitions (issue 16).

Each broker of a test cluster runs in a namespace of its own, joined to a bridge in the
root namespace by a veth pair; the test's clients stay in the root namespace and reach
every node through the bridge. Cutting a node's veth from the bridge isolates it from
the other nodes and from the clients at once (packets are dropped, connects time out, as
on a real network); putting it back heals it. Nothing else on the machine is touched:
names carry a per-run tag, and `close()` removes everything it made.

This needs root and iproute2 (`ip netns`); `available()` says whether the machine allows
it, so partition tests can skip with a clear reason where it does not (no tc netem or
firewall is needed)."""
import os
import subprocess
import uuid

SUBNET = "10.77"


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def available():
    """Whether namespaces can be made here (root, `ip netns add` works); the reason if not."""
    if os.geteuid() != 0:
        return False, "network namespaces unavailable (needs root)"
    probe = f"brkprobe{uuid.uuid4().hex[:6]}"
    try:
        r = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"network namespaces unavailable ({e})"
    if r.returncode != 0:
        return False, f"network namespaces unavailable: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    r = _ip("link", "add", probe, "type", "bridge", check=False)
    if r.returncode != 0:
        return False, f"bridges unavailable: {r.stderr.strip()}"
    _ip("link", "del", probe, check=False)
    return True, ""


class Net:
    """A bridge and `n` namespaces on it. Node i (0-based) has address `addr(i)`; the
    root namespace has `SUBNET.<k>.1` on the bridge."""

    def __init__(self, n):
        tag = uuid.uuid4().hex[:5]
        self.tag = tag
        # a distinct /24 per run, so two runs on one machine never share addresses
        self.k = int(tag[:2], 16) % 250 + 1
        self.bridge = f"brk{tag}"
        self.names = [f"brk{tag}n{i}" for i in range(n)]
        self.host_ends = [f"bv{tag}{i}" for i in range(n)]
        self._made = []
        try:
            self._build(n)
        except Exception:
            self.close()
            raise

    def _build(self, n):
        _ip("link", "add", self.bridge, "type", "bridge")
        self._made.append(("link", self.bridge))
        _ip("addr", "add", f"{SUBNET}.{self.k}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i in range(n):
            ns, host = self.names[i], self.host_ends[i]
            _ip("netns", "add", ns)
            self._made.append(("netns", ns))
            peer = f"bp{self.tag}{i}"
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            self._made.append(("link", host))
            _ip("link", "set", peer, "netns", ns)
            _ip("-n", ns, "link", "set", peer, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "set", host, "master", self.bridge)
            _ip("link", "set", host, "up")

    def addr(self, i):
        """Node i's address (reachable from the root namespace and the other nodes)."""
        return f"{SUBNET}.{self.k}.{10 + i}"

    def wrap(self, i, argv):
        """The command line that runs `argv` inside node i's namespace."""
        return ["ip", "netns", "exec", self.names[i], *argv]

    def cut(self, i):
        """Isolates node i from the other nodes and from the clients."""
        _ip("link", "set", self.host_ends[i], "nomaster")

    def heal(self, i):
        """Joins node i to the bridge again."""
        _ip("link", "set", self.host_ends[i], "master", self.bridge)

    def partition(self, side):
        """Cuts every node in `side` off (each is alone on its side: a cut node reaches
        nobody, so [0] against [1, 2] is `partition([0])`)."""
        for i in side:
            self.cut(i)

    def heal_all(self):
        for i in range(len(self.names)):
            self.heal(i)

    def close(self):
        """Removes what was made (kill the processes inside first: a namespace with a
        process in it outlives `ip netns del`)."""
        for kind, name in reversed(self._made):
            if kind == "netns":
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self._made = []
