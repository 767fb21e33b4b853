"""Browsing and moving messages of queues whose home is another node of a three-node
cluster (`GET /api/queues/{vhost}/{name}/messages`, `POST …/move` on a node that does
not run the queue): the browse goes to the home (`OpReq::Peek`) and leaves the queue as
it was; a move takes through the home's basic.get and publishes to a queue of a third
node, and every message arrives once, in order."""
import json
import os
import sys
import urllib.request

import pika
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import channel, declare_on, eventually  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]


def call(node, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(node.http_url + path, data=data, method=method)
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def take_all(node, queue, n):
    conn, ch = channel(node)
    got = []
    for _ in range(200):
        if len(got) == n:
            break
        m, props, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            conn.process_data_events(0.05)
            continue
        got.append((body, m.redelivered, props.headers))
    conn.close()
    assert len(got) == n, got
    return got


def test_browse_and_move_through_another_node(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rb.src")
    declare_on(n3, (n1, n2), "rb.dst")
    conn, ch = channel(n1)
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", "rb.src", f"m{i}".encode(),
                         pika.BasicProperties(delivery_mode=2, headers={"i": i}))
    conn.close()
    page = call(n2, "GET", "/api/queues/%2F/rb.src/messages?offset=1&count=3")
    assert page["total"] == 5 and page["offset"] == 1
    assert [(m["position"], m["payload"], m["redelivered"], m["properties"]["headers"]) for m in page["items"]] == [
        (1, "m1", False, {"i": 1}), (2, "m2", False, {"i": 2}), (3, "m3", False, {"i": 3})]
    # moved from node 2 (neither the source's home nor the destination's)
    out = call(n2, "POST", "/api/queues/%2F/rb.src/move", {"count": 3, "destination": "queue", "queue": "rb.dst"})
    assert out == {"moved": 3, "remaining": 2, "stopped": None}
    assert [(b, r) for b, r, _ in take_all(n3, "rb.dst", 3)] == [(b"m0", False), (b"m1", False), (b"m2", False)]
    # the browse changed nothing: the rest come first-time, in order
    assert [(b, r) for b, r, _ in take_all(n1, "rb.src", 2)] == [(b"m3", False), (b"m4", False)]


def test_browse_a_quorum_queue_from_each_node(cluster):
    n1, n2, n3 = cluster.nodes
    declare_on(n1, (n2, n3), "rb.qq", arguments={"x-queue-type": "quorum"})
    conn, ch = channel(n1)
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", "rb.qq", f"q{i}".encode(), pika.BasicProperties(delivery_mode=2))
    conn.close()
    for node in (n1, n2, n3):
        def seen():
            page = call(node, "GET", "/api/queues/%2F/rb.qq/messages")
            assert page["total"] == 3, page
            return page
        page = eventually(seen, what=f"browse on {node.name}")
        assert [m["payload"] for m in page["items"]] == ["q0", "q1", "q2"]
    assert [(b, r) for b, r, _ in take_all(n2, "rb.qq", 3)] == [(b"q0", False), (b"q1", False), (b"q2", False)]
