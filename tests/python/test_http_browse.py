"""Browsing a queue without taking its messages (`GET /api/queues/{vhost}/{name}/messages`)
and moving messages back to where they were dead-lettered from or to another queue
(`POST …/move`): the broker's own endpoints (RabbitMQ has neither), and broker-cli's
`queues peek` and `queues move`.

Each test asserts what a client then receives over AMQP: the queue unchanged after a
browse (same messages, same order, redelivered=False), every message moved arriving
once with its headers, nothing lost when a move stops."""
import json
import subprocess

import pika
import pytest

from conftest import uniq
from httpapi import ALL, amqp, api, eventually, q, reg  # noqa: F401
from test_cli import EXIT_REFUSED, binary, cli, home  # noqa: F401

pytestmark = pytest.mark.ours_only


def publish(ch, queue, bodies, exchange="", **props):
    for b in bodies:
        ch.basic_publish(exchange, queue, b, pika.BasicProperties(**props))


def drain(ch, queue, n, timeout=10.0):
    """basic.get with ack until n messages came: (body, redelivered, properties) each."""
    import time
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            ch.connection.process_data_events(0.05)
            continue
        out.append((body, method.redelivered, props))
    assert len(out) == n, f"got {len(out)} of {n} messages from {queue}"
    return out


def ready(api, vhost, name):
    return api.json(f"/api/queues/{q(vhost)}/{q(name)}")["messages_ready"]


def browse(api, vhost, name, query=""):
    return api.get(f"/api/queues/{q(vhost)}/{q(name)}/messages{query}")


# --------------------------------------------------------------------------- browse


def test_browse_shows_messages_without_changing_the_queue(api, reg, amqp):
    name = reg.queue("browse", body={"durable": False})
    c = amqp()
    ch = c.channel()
    for i in range(5):
        ch.basic_publish("", name, f"m{i}".encode(),
                         pika.BasicProperties(content_type="text/plain", headers={"n": i}, message_id=f"id{i}"))
    eventually(lambda: ready(api, "/", name) == 5)
    r = browse(api, "/", name, "?offset=1&count=2")
    assert r.status == 200, r
    page = r.json()
    assert page["total"] == 5 and page["offset"] == 1
    assert [m["position"] for m in page["items"]] == [1, 2]
    first = page["items"][0]
    assert first["payload"] == "m1" and first["payload_encoding"] == "string"
    assert first["payload_bytes"] == 2 and first["redelivered"] is False
    assert first["exchange"] == "" and first["routing_key"] == name
    assert first["properties"] == {"content_type": "text/plain", "headers": {"n": 1}, "message_id": "id1"}
    # browsing twice, and past the end, changes nothing
    assert browse(api, "/", name, "?offset=0&count=100").json()["items"][4]["payload"] == "m4"
    assert browse(api, "/", name, "?offset=7").json() == {"total": 5, "offset": 7, "items": []}
    trunc = browse(api, "/", name, "?count=1&truncate=1").json()["items"][0]
    assert trunc["payload"] == "m" and trunc["payload_bytes"] == 2
    assert ready(api, "/", name) == 5
    got = drain(ch, name, 5)
    assert [b for b, _, _ in got] == [f"m{i}".encode() for i in range(5)]
    assert all(not redelivered for _, redelivered, _ in got)


def test_browse_binary_payload_is_base64(api, reg, amqp):
    name = reg.queue("browse-bin", body={"durable": False})
    ch = amqp().channel()
    ch.basic_publish("", name, b"\xff\x00\x01")
    item = eventually(lambda: browse(api, "/", name).json()["items"][0])
    assert item["payload_encoding"] == "base64" and item["payload"] == "/wAB"


def test_browse_bad_parameters(api, reg):
    name = reg.queue("browse-bad", body={"durable": False})
    for query in ["?count=101", "?count=0", "?count=x", "?offset=-1", "?truncate=no"]:
        r = browse(api, "/", name, query)
        assert r.status == 400, (query, r)
        assert r.json()["error"] == "bad_request", query
    assert browse(api, "/", "no-such-queue-" + uniq("x")).status == 404
    stream = reg.queue("browse-stream", body={"durable": True, "arguments": {"x-queue-type": "stream"}})
    r = browse(api, "/", stream)
    assert r.status == 400 and "stream" in r.reason()


def test_browse_spilled_messages_of_a_long_queue(api, reg, amqp):
    """Past the in-memory window (16 MiB per queue) messages wait in spill files, or for
    persistent messages of a durable queue in the store: browsing reads them there."""
    c = amqp()
    ch = c.channel()
    big = 1 << 20
    for durable in (False, True):
        name = reg.queue("browse-spill", body={"durable": durable})
        mode = 2 if durable else 1
        for i in range(24):
            ch.basic_publish("", name, bytes([65 + i]) * big, pika.BasicProperties(delivery_mode=mode))
        eventually(lambda: ready(api, "/", name) == 24, conns=[c])
        page = browse(api, "/", name, "?offset=18&count=4&truncate=3").json()
        assert page["total"] == 24
        assert [(m["position"], m["payload"], m["payload_bytes"]) for m in page["items"]] == [
            (18 + k, chr(65 + 18 + k) * 3, big) for k in range(4)]
        assert ready(api, "/", name) == 24
        got = drain(ch, name, 24)
        assert [b[:1] for b, _, _ in got] == [bytes([65 + i]) for i in range(24)]
        assert not any(r for _, r, _ in got)


def test_browse_quorum_queue(api, reg, amqp):
    name = reg.queue("browse-qq", body={"durable": True, "arguments": {"x-queue-type": "quorum"}})
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    publish(ch, name, [b"q0", b"q1", b"q2"], delivery_mode=2)
    page = eventually(lambda: (lambda p: p if p["total"] == 3 else False)(browse(api, "/", name).json()))
    assert [m["payload"] for m in page["items"]] == ["q0", "q1", "q2"]
    assert all(m["redelivered"] is False for m in page["items"])
    got = drain(ch, name, 3)
    assert [b for b, _, _ in got] == [b"q0", b"q1", b"q2"]
    assert not any(r for _, r, _ in got)


def test_browse_needs_read_permission(api, reg, amqp):
    v = reg.vhost("browse-perm")
    name = reg.queue("browse-perm", vhost=v, body={"durable": False})
    u = reg.user(tags="management", perms={"configure": ".*", "write": ".*", "read": ""}, vhost=v)
    other = api.as_user(u, "pw")
    r = browse(other, v, name)
    # as POST …/get answers a user without read permission
    get = other.post(f"/api/queues/{q(v)}/{q(name)}/get",
                     {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert r.status == get.status == 401
    assert r.json()["error"] == "not_authorised"
    assert r.reason() == get.reason()
    r = other.post(f"/api/queues/{q(v)}/{q(name)}/move", {"count": 1, "destination": "origin"})
    assert r.status == 401


# --------------------------------------------------------------------------- move


def dead_letter_setup(api, reg, ch, durable=False):
    """An exchange routing key 'k' to a work queue whose rejects go to a DLQ."""
    x = reg.exchange("mv-x", body={"type": "direct", "durable": durable})
    dlq = reg.queue("mv-dlq", body={"durable": durable})
    work = reg.queue("mv-work", body={"durable": durable, "arguments": {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(work)}", {"routing_key": "k"}, expect=(201,))
    return x, work, dlq


def reject_all(ch, queue, n):
    for _ in range(n):
        method = None
        while method is None:
            method, _, _ = ch.basic_get(queue, auto_ack=False)
        ch.basic_reject(method.delivery_tag, requeue=False)


def move(api, name, body, vhost="/"):
    r = api.post(f"/api/queues/{q(vhost)}/{q(name)}/move", body)
    assert r.status == 200, r
    return r.json()


@pytest.mark.parametrize("durable", [False, True])
def test_move_dead_letters_back_to_their_origin(api, reg, amqp, durable):
    c = amqp()
    ch = c.channel()
    x, work, dlq = dead_letter_setup(api, reg, ch, durable)
    mode = 2 if durable else 1
    for i in range(3):
        ch.basic_publish(x, "k", f"d{i}".encode(), pika.BasicProperties(headers={"i": i}, delivery_mode=mode))
    reject_all(ch, work, 3)
    eventually(lambda: ready(api, "/", dlq) == 3, conns=[c])
    peeked = browse(api, "/", dlq).json()["items"]
    death = peeked[0]["properties"]["headers"]["x-death"][0]
    assert death["exchange"] == x and death["routing-keys"] == ["k"] and death["reason"] == "rejected"
    out = move(api, dlq, {"count": 10, "destination": "origin"})
    assert out == {"moved": 3, "remaining": 0, "stopped": None}
    got = drain(ch, work, 3)
    assert [b for b, _, _ in got] == [b"d0", b"d1", b"d2"]
    for i, (_, _, props) in enumerate(got):
        assert props.headers["i"] == i
        assert props.headers["x-death"][0]["queue"] == work
        assert props.delivery_mode == mode
    assert ready(api, "/", dlq) == 0


def test_move_to_another_queue_in_batches(api, reg, amqp):
    c = amqp()
    ch = c.channel()
    src = reg.queue("mv-src", body={"durable": False})
    dst = reg.queue("mv-dst", body={"durable": True})
    publish(ch, src, [f"b{i}".encode() for i in range(250)], content_type="text/plain")
    eventually(lambda: ready(api, "/", src) == 250, conns=[c])
    out = move(api, src, {"count": 220, "destination": "queue", "queue": dst})
    assert out == {"moved": 220, "remaining": 30, "stopped": None}
    got = drain(ch, dst, 220)
    assert [b for b, _, _ in got] == [f"b{i}".encode() for i in range(220)]
    assert got[0][2].content_type == "text/plain"
    assert [b for b, _, _ in drain(ch, src, 30)] == [f"b{i}".encode() for i in range(220, 250)]


def test_move_stops_at_a_message_it_cannot_move_and_loses_nothing(api, reg, amqp):
    c = amqp()
    ch = c.channel()
    x, work, dlq = dead_letter_setup(api, reg, ch)
    ch.basic_publish(x, "k", b"first")
    reject_all(ch, work, 1)
    eventually(lambda: ready(api, "/", dlq) == 1, conns=[c])
    ch.basic_publish("", dlq, b"never-dead-lettered")
    ch.basic_publish(x, "k", b"third")
    reject_all(ch, work, 1)
    eventually(lambda: ready(api, "/", dlq) == 3, conns=[c])
    out = move(api, dlq, {"count": 10, "destination": "origin"})
    assert out["moved"] == 1 and out["remaining"] == 2
    assert "x-death" in out["stopped"]
    assert [b for b, _, _ in drain(ch, work, 1)] == [b"first"]
    assert [m["payload"] for m in browse(api, "/", dlq).json()["items"]] == ["never-dead-lettered", "third"]
    # unroutable: the origin's binding is gone
    ch.basic_get(dlq, auto_ack=True)
    api.ok("DELETE", f"/api/bindings/%2F/e/{q(x)}/q/{q(work)}/k")
    out = move(api, dlq, {"count": 10, "destination": "origin"})
    assert out["moved"] == 0 and out["remaining"] == 1 and "unroutable" in out["stopped"]
    # a missing destination queue is unroutable too
    out = move(api, dlq, {"destination": "queue", "queue": uniq("missing")})
    assert out["moved"] == 0 and out["remaining"] == 1 and "unroutable" in out["stopped"]
    assert [b for b, _, _ in drain(ch, dlq, 1)] == [b"third"]


def test_move_stops_at_a_full_reject_publish_queue(api, reg, amqp):
    c = amqp()
    ch = c.channel()
    src = reg.queue("mv-src", body={"durable": False})
    dst = reg.queue("mv-full", body={"durable": False, "arguments": {
        "x-max-length": 2, "x-overflow": "reject-publish"}})
    publish(ch, src, [b"1", b"2", b"3", b"4"])
    eventually(lambda: ready(api, "/", src) == 4, conns=[c])
    out = move(api, src, {"count": 4, "destination": "queue", "queue": dst})
    assert out["moved"] == 2 and out["remaining"] == 2 and "full" in out["stopped"]
    assert [b for b, _, _ in drain(ch, dst, 2)] == [b"1", b"2"]
    assert [b for b, _, _ in drain(ch, src, 2)] == [b"3", b"4"]


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_message_the_move_puts_back_is_not_a_return(api, reg, amqp, queue_type):
    # a put-back neither counts against the delivery limit (0 here: one counted return
    # would drop the message) nor waits out a retry back-off
    c = amqp()
    ch = c.channel()
    src = reg.queue("mv-src", body={"durable": True, "arguments": {
        "x-queue-type": queue_type, "x-delivery-limit": 0, "x-delayed-retry-min": 60000}})
    dst = reg.queue("mv-full", body={"durable": False, "arguments": {
        "x-max-length": 1, "x-overflow": "reject-publish"}})
    publish(ch, src, [b"1", b"2", b"3"])
    eventually(lambda: ready(api, "/", src) == 3, conns=[c])
    out = move(api, src, {"count": 3, "destination": "queue", "queue": dst})
    assert out["moved"] == 1 and "full" in out["stopped"], out
    def counts():
        # a quorum queue applies the put-back through its log: polled until it has
        info = api.json(f"/api/queues/%2F/{q(src)}")
        assert (info["messages_ready"], info["messages_delayed"]) == (2, 0), info

    eventually(counts, conns=[c])
    assert [b for b, _, _ in drain(ch, src, 2)] == [b"2", b"3"]


def test_move_to_a_quorum_queue(api, reg, amqp):
    c = amqp()
    ch = c.channel()
    src = reg.queue("mv-src", body={"durable": True})
    dst = reg.queue("mv-qq", body={"durable": True, "arguments": {"x-queue-type": "quorum"}})
    publish(ch, src, [b"a", b"b", b"c"], delivery_mode=2)
    eventually(lambda: ready(api, "/", src) == 3, conns=[c])
    assert move(api, src, {"count": 5, "destination": "queue", "queue": dst}) == {
        "moved": 3, "remaining": 0, "stopped": None}
    assert [b for b, _, _ in drain(ch, dst, 3)] == [b"a", b"b", b"c"]


def test_move_bad_requests(api, reg):
    src = reg.queue("mv-bad", body={"durable": False})
    path = f"/api/queues/%2F/{q(src)}/move"
    for body in [{"count": 0, "destination": "origin"}, {"count": 10001, "destination": "origin"},
                 {"destination": "elsewhere"}, {"destination": "queue"},
                 {"destination": "queue", "queue": src}]:
        r = api.post(path, body)
        assert r.status == 400, (body, r)
    assert api.post(path, raw=b"{not json").status == 400
    assert api.post(f"/api/queues/%2F/{uniq('none')}/move", {"destination": "origin"}).status == 404


def test_move_needs_write_permission_on_the_destination(api, reg, amqp):
    v = reg.vhost("mv-perm")
    src = reg.queue("mv-src", vhost=v, body={"durable": False})
    dst = reg.queue("mv-dst", vhost=v, body={"durable": False})
    u = reg.user(tags="management", perms={"configure": "", "write": "", "read": ".*"}, vhost=v)
    ch = amqp(vhost=v).channel()
    ch.basic_publish("", src, b"stay")
    eventually(lambda: ready(api, v, src) == 1)
    r = api.as_user(u, "pw").post(f"/api/queues/{q(v)}/{q(src)}/move",
                                  {"destination": "queue", "queue": dst})
    assert r.status == 401 and "amq.default" in r.reason()
    assert ready(api, v, src) == 1


# --------------------------------------------------------------------------- broker-cli


def test_cli_peek_and_move(api, reg, amqp, cli):
    c = amqp()
    ch = c.channel()
    x, work, dlq = dead_letter_setup(api, reg, ch)
    for i in range(3):
        ch.basic_publish(x, "k", f"c{i}".encode())
    reject_all(ch, work, 3)
    eventually(lambda: ready(api, "/", dlq) == 3, conns=[c])
    r = cli("queues", "peek", dlq, "--offset", "1", "--count", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("message 1 of 3\n") and r.stdout.endswith("  payload:\nc1\n"), r.stdout
    r = cli("queues", "peek", dlq, "--format", "json")
    assert r.returncode == 0 and [m["payload"] for m in json.loads(r.stdout)["items"]] == ["c0", "c1", "c2"]
    r = cli("queues", "peek", dlq, "--count", "101")
    assert r.returncode == 2
    r = cli("queues", "move", dlq)
    assert r.returncode == 2 and "--to-origin" in r.stderr
    r = cli("queues", "move", dlq, "--to-origin", "--count", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"moved 2 message(s) from queue '{dlq}' in vhost '/' to their origin (1 left)\n"
    other = reg.queue("mv-cli", body={"durable": False})
    ch.basic_publish("", dlq, b"no-death")
    r = cli("queues", "move", dlq, "--to-origin")
    assert r.returncode == EXIT_REFUSED, r
    assert f"moved 1 message(s) from queue '{dlq}' in vhost '/', then stopped:" in r.stderr, r.stderr
    assert "x-death" in r.stderr and "(1 left)" in r.stderr, r.stderr
    r = cli("queues", "move", dlq, "--to-queue", other)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"moved 1 message(s) from queue '{dlq}' in vhost '/' to queue '{other}' (0 left)\n"
    assert [b for b, _, _ in drain(ch, work, 3)] == [b"c0", b"c1", b"c2"]
    assert [b for b, _, _ in drain(ch, other, 1)] == [b"no-death"]


def test_cli_queues_list_filter_and_sort(reg, cli):
    prefix = uniq("cli-filter")
    for suffix in ["a", "B", "c"]:
        reg.queues.append(("/", f"{prefix}-{suffix}"))
        r = cli("queues", "declare", f"{prefix}-{suffix}")
        assert r.returncode == 0, r.stderr
    r = cli("queues", "list", "--name", prefix.upper(), "--sort", "name", "--sort-reverse",
            "--columns", "name", "--format", "tsv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == [f"{prefix}-c", f"{prefix}-a", f"{prefix}-B"]
    r = cli("queues", "list", "--name", f"^{prefix}-[ab]$", "--regex", "--columns", "name", "--format", "tsv")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == [f"{prefix}-B", f"{prefix}-a"]
