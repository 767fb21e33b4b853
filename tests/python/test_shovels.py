"""Dynamic shovels (RabbitMQ's `shovel` parameters): what they move arrives in order
with its properties and headers, from queues or exchanges, on this broker or to
another; on-confirm loses nothing when the destination is killed; src-delete-after;
the parameter is durable, exported and imported; /api/shovels and `broker-cli shovels`
show them; bad values and users without policymaker are refused."""
import json
import os
import subprocess
import time

import pika
import pytest

from conftest import BrokerProcess, connect, uniq
from httpapi import ALL, Api, api, eventually, q, reg  # noqa: F401 (fixtures)


def put_shovel(api, name, value, vhost="/", expect=(201, 204)):
    r = api.put(f"/api/parameters/shovel/{q(vhost)}/{name}", {"value": value})
    assert r.status in expect, r
    return r


def shovel_status(api, name, vhost="/"):
    r = api.get(f"/api/shovels/vhost/{q(vhost)}/{name}")
    assert r.status == 200, r
    [s] = r.json()
    return s


def wait_state(api, name, state, timeout=20.0):
    def check():
        s = shovel_status(api, name)
        assert s["state"] == state, s
        return s

    return eventually(check, timeout=timeout)


def drain(ch, queue, n, timeout=15.0):
    """Takes n messages off `queue` (acked), in order: (body, properties, method)."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} arrived"
            ch.connection.sleep(0.05)
            continue
        got.append((b, p, m))
    return got


def count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


@pytest.fixture
def ch(broker):
    c = connect(broker)
    yield c.channel()
    c.close()


def publish(ch, queue, bodies, **props):
    for b in bodies:
        ch.basic_publish("", queue, b, pika.BasicProperties(**props))


def test_queue_to_queue_keeps_order_properties_and_headers(api, ch):
    src, dst, name = uniq("shv-src"), uniq("shv-dst"), uniq("shv")
    ch.queue_declare(src, durable=True)
    bodies = [f"m{i}".encode() for i in range(50)]
    publish(ch, src, bodies, headers={"h": "v"}, content_type="text/plain",
            correlation_id="c1", delivery_mode=2)
    put_shovel(api, name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                           "dest-queue": dst, "dest-add-forward-headers": True,
                           "dest-add-timestamp-header": True})
    wait_state(api, name, "running")
    got = drain(ch, dst, 50)
    assert [b for b, _, _ in got] == bodies
    _, p, m = got[0]
    assert m.routing_key == dst
    assert (p.content_type, p.correlation_id, p.delivery_mode) == ("text/plain", "c1", 2)
    assert p.headers["h"] == "v"
    [fwd] = p.headers["x-shovelled"]
    assert fwd["shovel-name"] == name and fwd["shovel-type"] == "dynamic"
    assert fwd["src-queue"] == src and fwd["dest-queue"] == dst
    assert fwd["shovel-vhost"] == "/"
    assert abs(p.headers["x-shovelled-timestamp"] - time.time()) < 60
    assert eventually(lambda: count(ch, src) == 0)
    s = shovel_status(api, name)
    assert s["state"] == "running" and s["forwarded"] == 50
    assert (s["type"], s["src_queue"], s["dest_queue"]) == ("dynamic", src, dst)
    assert s["src_uri"] == "amqp://" and s["src_protocol"] == "amqp091"
    assert s["remaining"] == "unlimited" and "node" in s and "timestamp" in s
    api.ok("DELETE", f"/api/parameters/shovel/%2F/{name}")
    assert api.get(f"/api/shovels/vhost/%2F/{name}").status == 404
    # stopped: what comes now stays at the source
    publish(ch, src, [b"after"])
    time.sleep(0.5)
    assert count(ch, src) == 1


def test_queue_to_exchange_with_key_and_exchange_source(api, ch):
    src, dst, x, name = uniq("shv-src"), uniq("shv-dst"), uniq("shv-x"), uniq("shv")
    ch.queue_declare(src)
    ch.exchange_declare(x, "direct")
    ch.queue_declare(dst)
    ch.queue_bind(dst, x, "rk-new")
    put_shovel(api, name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                           "dest-exchange": x, "dest-exchange-key": "rk-new"})
    wait_state(api, name, "running")
    publish(ch, src, [b"a", b"b"])
    got = drain(ch, dst, 2)
    assert [b for b, _, _ in got] == [b"a", b"b"]
    assert got[0][2].exchange == x and got[0][2].routing_key == "rk-new"
    api.ok("DELETE", f"/api/parameters/shovel/%2F/{name}")

    # an exchange source: the shovel binds a queue of its own with src-exchange-key
    sx, name2 = uniq("shv-sx"), uniq("shv")
    ch.exchange_declare(sx, "topic")
    put_shovel(api, name2, {"src-uri": "amqp://", "src-exchange": sx,
                            "src-exchange-key": "a.*", "dest-uri": "amqp://",
                            "dest-queue": dst})
    s = wait_state(api, name2, "running")
    assert (s["src_exchange"], s["src_exchange_key"]) == (sx, "a.*")
    ch.basic_publish(sx, "a.one", b"x1")
    ch.basic_publish(sx, "b.one", b"x2")
    ch.basic_publish(sx, "a.two", b"x3")
    got = drain(ch, dst, 2)
    assert [b for b, _, _ in got] == [b"x1", b"x3"]
    api.ok("DELETE", f"/api/parameters/shovel/%2F/{name2}")


def test_src_delete_after_moves_exactly_n_then_removes_itself(api, ch):
    src, dst, name = uniq("shv-src"), uniq("shv-dst"), uniq("shv")
    ch.queue_declare(src)
    publish(ch, src, [f"m{i}".encode() for i in range(10)])
    put_shovel(api, name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                           "dest-queue": dst, "src-delete-after": 4, "src-prefetch-count": 2})
    eventually(lambda: api.get(f"/api/parameters/shovel/%2F/{name}").status == 404, timeout=20)
    assert count(ch, dst) == 4
    assert count(ch, src) == 6
    assert [b for b, _, _ in drain(ch, dst, 4)] == [b"m0", b"m1", b"m2", b"m3"]

    # queue-length: what the queue held at start
    name2 = uniq("shv")
    put_shovel(api, name2, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                            "dest-queue": dst, "delete-after": "queue-length"})
    eventually(lambda: api.get(f"/api/parameters/shovel/%2F/{name2}").status == 404, timeout=20)
    assert count(ch, dst) == 6 and count(ch, src) == 0


@pytest.mark.parametrize("value,text", [
    ({"src-queue": "a", "dest-uri": "amqp://"}, 'Key "src-uri" not found in bad'),
    ({"src-uri": "amqp://", "src-queue": "a", "src-exchange": "x", "dest-uri": "amqp://"},
     "Cannot specify 'src-exchange' and 'src-queue'"),
    ({"src-uri": "amqp://", "dest-uri": "amqp://"}, "Must specify 'src-queue' or 'src-exchange'"),
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "ack-mode": "x"},
     "ack-mode should be one of"),
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "bogus": 1},
     "Unrecognised terms"),
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "src-protocol": "amqp10"},
     "not supported"),
    ({"src-uri": "http://h", "src-queue": "a", "dest-uri": "amqp://"}, "not an AMQP URI"),
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://", "src-delete-after": -2},
     '"never" or "queue-length"'),
    ({"src-uri": "amqp:///nosuchvhost", "src-queue": "a", "dest-uri": "amqp://"},
     "does not exist"),
    # a table key no AMQP short string can hold (at most 255 bytes)
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
      "dest-queue-args": {"x-" + "k" * 300: 1}}, "key longer than 255 bytes"),
    ({"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://",
      "dest-publish-properties": {"headers": {"h": {"k" * 256: 1}}}},
     "dest-publish-properties has a key longer than 255 bytes"),
])
def test_bad_values_are_refused(api, value, text):
    r = api.put("/api/parameters/shovel/%2F/bad", {"value": value})
    assert r.status == 400, r
    body = r.json()
    assert body["error"] == "bad_request"
    assert body["reason"].startswith("Validation failed\n\n"), body
    assert text in body["reason"], body
    assert api.get("/api/parameters/shovel/%2F/bad").status == 404


def test_parameters_need_policymaker(api, reg):
    user = reg.user("shv-user", tags="management", perms=ALL)
    as_user = api.as_user(user, "pw")
    value = {"src-uri": "amqp://", "src-queue": "a", "dest-uri": "amqp://"}
    r = as_user.put("/api/parameters/shovel/%2F/denied", {"value": value})
    assert r.status == 401, r
    assert as_user.get("/api/parameters/shovel").status == 401
    assert as_user.get("/api/shovels").status == 200
    pm = reg.user("shv-pm", tags="policymaker", perms=ALL)
    as_pm = api.as_user(pm, "pw")
    name = uniq("shv")
    r = as_pm.put(f"/api/parameters/shovel/%2F/{name}", {"value": value})
    assert r.status == 201, r
    assert any(p["name"] == name and p["component"] == "shovel"
               for p in as_pm.json("/api/parameters"))
    as_pm.ok("DELETE", f"/api/parameters/shovel/%2F/{name}")


@pytest.fixture
def two_brokers():
    a, b = BrokerProcess(), BrokerProcess()
    yield a, b
    a.stop()
    b.stop()


def test_between_brokers_on_confirm_loses_nothing_when_destination_is_killed(two_brokers):
    a, b = two_brokers
    api_a = Api(a.http_url)
    ca, cb = connect(a.port), connect(b.port)
    cha, chb = ca.channel(), cb.channel()
    cha.queue_declare("src", durable=True)
    chb.queue_declare("dst", durable=True)
    n = 3000
    for i in range(n):
        cha.basic_publish("", "src", str(i).encode(), pika.BasicProperties(delivery_mode=2))
    cb.close()
    put_shovel(api_a, "s", {"src-uri": "amqp://", "src-queue": "src",
                            "dest-uri": f"amqp://guest:guest@127.0.0.1:{b.port}/%2F",
                            "dest-queue": "dst", "src-prefetch-count": 10,
                            "reconnect-delay": 0.5})
    s = wait_state(api_a, "s", "running")
    assert s["dest_uri"] == f"amqp://127.0.0.1:{b.port}/%2F", "credentials are masked"
    # kill -9 the destination mid-transfer, then bring it back on the same data dir
    eventually(lambda: shovel_status(api_a, "s")["forwarded"] > 0, timeout=20, interval=0.02)
    b.proc.kill()
    b.proc.wait()
    assert count(cha, "src") > 0, "killed mid-transfer"
    st = wait_state(api_a, "s", "terminated")
    assert "destination" in st["reason"] or "connection" in st["reason"], st
    b._launch()
    wait_state(api_a, "s", "running", timeout=30)
    eventually(lambda: count(cha, "src") == 0, timeout=60)
    cb = connect(b.port)
    chb = cb.channel()
    got = set()
    while True:
        m, _, body = chb.basic_get("dst", auto_ack=True)
        if m is None:
            break
        got.add(int(body))
    assert got == set(range(n)), f"lost: {sorted(set(range(n)) - got)[:10]}"
    cb.close()
    ca.close()


def test_shovel_survives_restart_and_definitions_round_trip(api):
    b = BrokerProcess()
    try:
        bapi = Api(b.http_url)
        c = connect(b.port)
        ch = c.channel()
        ch.queue_declare("src", durable=True)
        value = {"src-uri": "amqp://", "src-queue": "src", "dest-uri": "amqp://",
                 "dest-queue": "dst", "ack-mode": "on-publish"}
        put_shovel(bapi, "durable", value)
        wait_state(bapi, "durable", "running")
        c.close()
        b.proc.kill()
        b.proc.wait()
        b._launch()
        bapi = Api(b.http_url)
        wait_state(bapi, "durable", "running")
        c = connect(b.port)
        ch = c.channel()
        publish(ch, "src", [b"after-restart"], delivery_mode=2)
        assert drain(ch, "dst", 1)[0][0] == b"after-restart"
        c.close()
        defs = bapi.json("/api/definitions")
        [p] = [p for p in defs["parameters"] if p["component"] == "shovel"]
        assert p == {"value": value, "vhost": "/", "component": "shovel", "name": "durable"}
    finally:
        b.stop()
    # imported into another broker, it runs there
    name = uniq("shv-imp")
    p["name"] = name
    p["value"] = dict(value, **{"src-queue": uniq("imp-src"), "dest-queue": uniq("imp-dst")})
    api.ok("POST", "/api/definitions", {"parameters": [p]})
    wait_state(api, name, "running")
    api.ok("DELETE", f"/api/shovels/vhost/%2F/{name}")
    assert api.get(f"/api/parameters/shovel/%2F/{name}").status == 404


def test_restart_endpoint_and_cli(api, ch, http_url):
    src, name = uniq("shv-src"), uniq("shv")
    ch.queue_declare(src)
    put_shovel(api, name, {"src-uri": "amqp://", "src-queue": src, "dest-uri": "amqp://",
                           "dest-queue": uniq("shv-dst")})
    wait_state(api, name, "running")
    api.ok("DELETE", f"/api/shovels/vhost/%2F/{name}/restart")
    wait_state(api, name, "running")
    cli = os.environ.get("BROKER_CLI_BIN")
    if not cli:
        pytest.skip("BROKER_CLI_BIN not set")
    out = subprocess.run([cli, "--url", http_url, "shovels", "--format", "json"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    [row] = [r for r in rows if r["name"] == name]
    assert row["state"] == "running" and row["vhost"] == "/"
    text = subprocess.run([cli, "--url", http_url, "shovels"], capture_output=True,
                          text=True, timeout=30).stdout
    assert name in text and "running" in text
    api.ok("DELETE", f"/api/parameters/shovel/%2F/{name}")


def test_shovels_go_with_their_vhost(api, reg):
    vh = reg.vhost("shv-vh")
    name = uniq("shv")
    local = f"amqp:///{q(vh)}"
    r = api.put(f"/api/parameters/shovel/{q(vh)}/{name}", {
        "value": {"src-uri": local, "src-queue": "a", "dest-uri": local, "dest-queue": "b"}})
    assert r.status == 201, r
    eventually(lambda: api.json(f"/api/shovels/vhost/{q(vh)}/{name}")[0]["state"] == "running")
    assert [p["name"] for p in api.json(f"/api/parameters/shovel/{q(vh)}")] == [name]
    api.ok("DELETE", f"/api/vhosts/{q(vh)}")
    assert not [p for p in api.json("/api/parameters/shovel") if p["vhost"] == vh]
    assert not [s for s in api.json("/api/shovels") if s["vhost"] == vh]
