"""Dynamic shovels on a three-node cluster: the parameter set on one node is on every
node, the shovel runs on exactly one (the running member with the lowest name), and
when that node is killed the next one takes it over and moves what comes next."""
import json
import os
import sys
import urllib.request

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import channel, eventually  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

QQ = {"x-queue-type": "quorum"}


def put(node, path, body):
    req = urllib.request.Request(node.http_url + path, data=json.dumps(body).encode(), method="PUT")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def runner(nodes):
    """The node names that report the shovel running."""
    out = []
    for n in nodes:
        for s in n.api("/api/shovels"):
            if s["name"] == "cs" and s["state"] == "running":
                out.append(s["node"])
    return out


def test_a_shovel_runs_on_one_node_and_moves_when_it_dies(fresh_cluster):
    c = fresh_cluster
    nodes = sorted(c.nodes, key=lambda n: n.name)
    conn, ch = channel(nodes[-1])
    ch.queue_declare("cs-src", durable=True, arguments=QQ)
    ch.queue_declare("cs-dst", durable=True, arguments=QQ)
    conn.close()
    value = {"src-uri": "amqp://", "src-queue": "cs-src", "dest-uri": "amqp://",
             "dest-queue": "cs-dst", "reconnect-delay": 1}
    assert put(nodes[-1], "/api/parameters/shovel/%2F/cs", {"value": value}) == 201
    for n in nodes:
        eventually(lambda: any(p["name"] == "cs" for p in n.api("/api/parameters/shovel")),
                   what=f"the parameter on {n.name}")
    assert eventually(lambda: runner(nodes) == [nodes[0].name], what="one runner")
    conn, ch = channel(nodes[1])
    ch.confirm_delivery()
    for i in range(10):
        ch.basic_publish("", "cs-src", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    eventually(lambda: ch.queue_declare("cs-dst", passive=True).method.message_count == 10,
               what="10 moved")
    conn.close()
    nodes[0].kill9()
    alive = nodes[1:]
    eventually(lambda: runner(alive) == [nodes[1].name], timeout=60, what="taken over")
    conn, ch = channel(nodes[2])
    ch.confirm_delivery()
    for i in range(10, 20):
        ch.basic_publish("", "cs-src", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    eventually(lambda: ch.queue_declare("cs-dst", passive=True).method.message_count >= 20,
               timeout=60, what="20 moved")
    conn.close()
