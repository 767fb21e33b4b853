"""The cluster harness's network namespaces (tests/cluster/netns.py): a server in a
node's namespace is reachable from the root namespace through the bridge, unreachable
while the node is cut off (a connect times out: packets are dropped, not refused), and
reachable again once healed. Skipped where namespaces cannot be made (not root)."""
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
import netns  # noqa: E402

pytestmark = pytest.mark.ours_only

SERVER = "import socket,sys\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n" \
         "s.bind((sys.argv[1],7001));s.listen(8);print('up',flush=True)\n" \
         "while True:\n c,_=s.accept();c.sendall(b'hi');c.close()\n"


def hello(addr, timeout=2.0):
    with socket.create_connection((addr, 7001), timeout=timeout) as c:
        return c.recv(2)


@pytest.fixture
def net():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    n = netns.Net(2)
    procs = []
    try:
        yield n, procs
    finally:
        for p in procs:
            p.kill()
            p.wait()
        n.close()


def test_a_cut_node_is_unreachable_until_healed_and_the_others_are_not_affected(net):
    n, procs = net
    for i in range(2):
        p = subprocess.Popen(n.wrap(i, [sys.executable, "-c", SERVER, n.addr(i)]), stdout=subprocess.PIPE)
        procs.append(p)
        assert p.stdout.readline().strip() == b"up"
    assert hello(n.addr(0)) == b"hi" and hello(n.addr(1)) == b"hi"
    n.cut(0)
    started = time.monotonic()
    with pytest.raises(OSError):
        hello(n.addr(0), timeout=1.0)
    assert time.monotonic() - started >= 0.9, "a cut must drop packets, not refuse them"
    assert hello(n.addr(1)) == b"hi"
    # node 1 cannot reach node 0 either
    r = subprocess.run(n.wrap(1, [sys.executable, "-c",
                                  f"import socket;socket.create_connection(('{n.addr(0)}',7001),timeout=1)"]),
                       capture_output=True, timeout=20)
    assert r.returncode != 0
    n.heal(0)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert hello(n.addr(0)) == b"hi"
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_close_leaves_nothing_behind():
    ok, why = netns.available()
    if not ok:
        pytest.skip(why)
    n = netns.Net(1)
    names = (n.bridge, n.names[0], n.host_ends[0])
    n.close()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert names[0] not in links and names[2] not in links and names[1] not in spaces
