"""Three brokers started with each other as `--cluster-peers` (issue 16, step 4): they
form one cluster, every node lists every node and the same metadata leader, durable
definitions made on any node are seen on all, a node killed with SIGKILL rejoins and
catches up, and the refusals (a secret file others can read, a node with the wrong
secret). A classic queue is used from another node through its home (published to, got
from, consumed from: docs/design/cluster.md §6; test_cluster_remote.py has the rest); a
quorum queue has a member on each node (test_cluster_quorum.py)."""
import json
import os
import subprocess
import sys
import time

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import Node, broker_bin, channel, eventually, free_port  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]



def running(node):
    return {n["name"] for n in node.api("/api/nodes") if n["running"]}


def test_three_nodes_form_one_cluster_with_one_leader(cluster):
    names = {n.name for n in cluster.nodes}
    leaders = set()
    for node in cluster.nodes:
        listed = node.api("/api/nodes")
        assert {n["name"] for n in listed} == names
        assert all(n["running"] and n["type"] == "disc" and n["metadata_member"] for n in listed), listed
        leader = [n["name"] for n in listed if n["metadata_leader"]]
        assert len(leader) == 1, listed
        leaders.add(leader[0])
        # this node with its own figures, each other node by name
        me = next(n for n in listed if n["name"] == node.name)
        assert me["mem_used"] > 0 and me["being_drained"] is False
        for other in names:
            assert node.api(f"/api/nodes/{other}")["name"] == other
        assert node.api("/api/overview")["node"] == node.name
    assert len(leaders) == 1


def test_definitions_made_on_any_node_are_seen_on_every_node(cluster):
    n0, n1, n2 = cluster.nodes
    c0, ch0 = channel(n0)
    c1, ch1 = channel(n1)
    c2, ch2 = channel(n2)
    try:
        ch0.exchange_declare("cb.x", "direct", durable=True)
        ch0.queue_declare("cb.q0", durable=True)
        ch1.queue_declare("cb.q1", durable=True)
        # node 3 binds node 2's queue to node 1's exchange, and sees node 1's queue
        ch2.queue_bind("cb.q1", "cb.x", routing_key="k")
        ok = ch2.queue_declare("cb.q0", passive=True)
        assert ok.method.queue == "cb.q0"
        for node in cluster.nodes:
            eventually(lambda: any(x["name"] == "cb.x" for x in node.api("/api/exchanges/%2F")),
                       what=f"exchange on {node.name}")
            queues = eventually(lambda: {q["name"]: q for q in node.api("/api/queues/%2F")
                                         if q["name"].startswith("cb.q")} if len(
                [q for q in node.api("/api/queues/%2F") if q["name"] in ("cb.q0", "cb.q1")]) == 2 else None,
                what=f"queues on {node.name}")
            assert queues["cb.q0"]["node"] == n0.name and queues["cb.q1"]["node"] == n1.name
            eventually(lambda: any(b["source"] == "cb.x" and b["destination"] == "cb.q1" and b["routing_key"] == "k"
                                   for b in node.api("/api/bindings/%2F")), what=f"binding on {node.name}")
        # an equivalent redeclare on another node is declare-ok, a different one 406
        ch2.queue_declare("cb.q1", durable=True)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch2.queue_declare("cb.q1", durable=False)
        assert e.value.reply_code == 406
    finally:
        for c in (c0, c1, c2):
            c.close()


def test_a_bind_right_after_a_declare_through_another_node_finds_the_queue(cluster):
    """A declare-ok means committed, and applied on the node that answered; another node
    may apply it a moment later. A bind or a passive declare there must not answer 404
    meanwhile: a lookup that finds nothing looks again once the node applied what the
    group committed (without that, this failed on the second queue every time)."""
    n0, n1, _ = cluster.nodes
    c0, ch0 = channel(n0)
    c1, ch1 = channel(n1)
    try:
        ch1.exchange_declare("cb.race.x", "direct", durable=True)
        for i in range(40):
            ch0.queue_declare(f"cb.race.q{i}", durable=True)
            if i % 2:
                assert ch1.queue_declare(f"cb.race.q{i}", passive=True).method.queue == f"cb.race.q{i}"
            ch1.queue_bind(f"cb.race.q{i}", "cb.race.x", routing_key=str(i))
        ch1.confirm_delivery()
        ch1.basic_publish("cb.race.x", "39", b"routed")
        eventually(lambda: ch0.queue_declare("cb.race.q39", passive=True).method.message_count == 1,
                   what="the message routed through the binding")
    finally:
        c0.close()
        c1.close()


def test_a_queue_of_another_node_is_used_through_its_home(cluster):
    n0, n1, n2 = cluster.nodes
    c1, ch1 = channel(n1)
    ch1.queue_declare("cb.home1", durable=True)
    c1.close()
    eventually(lambda: any(q["name"] == "cb.home1" for q in n0.api("/api/queues/%2F")), what="queue on node 1")
    conn, ch = channel(n0)
    try:
        # a publish on another node reaches it (tests/python/test_cluster_remote.py has more)
        ch.confirm_delivery()
        ch.basic_publish("", "cb.home1", b"m", mandatory=True)
        assert ch.basic_get("cb.home1", auto_ack=True)[2] == b"m"
        # and a consumer on another node gets what is published (test_cluster_remote.py has more)
        got = []
        tag = ch.basic_consume("cb.home1", lambda c, m, p, b: got.append(b), auto_ack=True)
        ch.basic_publish("", "cb.home1", b"c", mandatory=True)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got == [b"c"]
        # cancel-ok comes after the home removed the consumer
        ch.basic_cancel(tag)
    finally:
        conn.close()
    # on its home node it works
    c1, ch1 = channel(n1)
    ch1.confirm_delivery()
    ch1.basic_publish("", "cb.home1", b"here", mandatory=True)
    assert ch1.basic_get("cb.home1", auto_ack=True)[2] == b"here"
    c1.close()


def test_a_quorum_queue_has_a_member_on_every_node(cluster):
    n0, n1, _ = cluster.nodes
    conn, ch = channel(n1)
    ch.queue_declare("cb.qq", durable=True, arguments={"x-queue-type": "quorum"})
    ch.confirm_delivery()
    ch.basic_publish("", "cb.qq", b"q", mandatory=True)
    conn.close()
    names = sorted(n.name for n in cluster.nodes)
    for node in cluster.nodes:
        q = eventually(lambda: node.api("/api/queues/%2F/cb.qq"), what=f"quorum queue on {node.name}")
        # the declaring node first (tests/python/test_cluster_quorum.py uses them)
        assert (q["type"], sorted(q["members"]), q["members"][0]) == ("quorum", names, n1.name)
    conn, ch = channel(n0)
    assert ch.basic_get("cb.qq", auto_ack=True)[2] == b"q"
    conn.close()


def cli_bin():
    env = os.environ.get("BROKER_CLI_BIN")
    if env:
        return env
    here = os.path.join(os.path.dirname(broker_bin()), "broker-cli")
    return here if os.path.exists(here) else None


def test_cli_cluster_status_lists_the_nodes_and_the_leader(cluster):
    cli = cli_bin()
    if cli is None:
        pytest.skip("broker-cli not built")
    node = cluster.nodes[0]
    out = subprocess.run([cli, "cluster", "status", "--url", node.http_url], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["name", "running", "member", "leader"]
    for n in cluster.nodes:
        assert any(line.split()[:3] == [n.name, "true", "true"] for line in lines), out.stdout
    leader = next(n["name"] for n in node.api("/api/nodes") if n["metadata_leader"])
    assert lines[-1] == f"metadata leader: {leader}"
    out = subprocess.run([cli, "cluster", "status", "--json", "--url", node.http_url], capture_output=True,
                         text=True, timeout=30)
    status = json.loads(out.stdout)
    assert status["leader"] == leader and len(status["nodes"]) == 3
    down = subprocess.run([cli, "cluster", "status", "--url", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode == 3 and down.stderr.startswith("broker-cli: "), down.stderr


def test_a_killed_node_rejoins_and_catches_up(cluster):
    n0, _, n2 = cluster.nodes
    n2.kill9()
    eventually(lambda: n2.name not in running(n0), what="node 3 seen down")

    def leader():
        return next((n["name"] for n in n0.api("/api/nodes") if n["metadata_leader"]), None)
    # if it led, the other two elect one of them
    eventually(lambda: leader() not in (None, n2.name), what="a leader among the survivors")
    down = next(n for n in n0.api("/api/nodes") if n["name"] == n2.name)
    assert down == {"name": n2.name, "type": "disc", "running": False, "cluster_links": [],
                    "being_drained": False, "metadata_member": True, "metadata_leader": False}
    conn, ch = channel(n0)
    ch.queue_declare("cb.while-away", durable=True)
    ch.exchange_declare("cb.x-away", "fanout", durable=True)
    ch.queue_bind("cb.while-away", "cb.x-away")
    conn.close()
    n2.start()
    cluster.wait_formed(30)
    eventually(lambda: any(q["name"] == "cb.while-away" and q["node"] == n0.name
                           for q in n2.api("/api/queues/%2F")), what="the queue on the restarted node")
    eventually(lambda: any(b["source"] == "cb.x-away" for b in n2.api("/api/bindings/%2F")),
               what="the binding on the restarted node")


def test_a_secret_file_others_can_read_is_refused(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    os.chmod(secret, 0o644)
    argv = [broker_bin(), "--node-name", "a@x", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0",
            "--http-listen", "none", "--cluster-peers", "b@127.0.0.1:1", "--cluster-secret-file", str(secret)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert f"cluster secret file {secret} must be accessible by its owner only (its mode is 0644" in out.stderr
    out = subprocess.run(argv[:-2], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--cluster-peers needs --cluster-secret-file" in out.stderr


def test_a_node_with_the_wrong_secret_is_not_admitted(cluster, tmp_path):
    secret = tmp_path / "wrong"
    secret.write_text("not-the-cluster-secret")
    os.chmod(secret, 0o600)
    intruder = Node(3, "broker-3@cluster", "127.0.0.1", str(secret))
    intruder.peers = [f"{o.name}@{o.host}:{o.cluster_port}" for o in cluster.nodes]
    try:
        intruder.start()
        # it serves /api/nodes while it waits: it is nobody's member
        listed = eventually(lambda: intruder.api("/api/nodes"), what="the intruder's API")
        assert not any(n["metadata_member"] for n in listed), listed
        assert not any(n["running"] for n in listed if n["name"] != intruder.name), listed
        eventually(lambda: "refused a cluster connection" in cluster.nodes[0].log_tail(20000),
                   what="the handshake refused")
        for node in cluster.nodes:
            assert intruder.name not in {n["name"] for n in node.api("/api/nodes")}
        assert "waiting for peers" in intruder.log_tail(20000)
    finally:
        intruder.remove()
