"""Partitioned streams (RabbitMQ's super streams) through the management API, pika and
broker-cli: `PUT/DELETE /api/stream/super-streams/{vhost}/{name}`,
`GET /api/stream/super-streams[/{vhost}]`, `broker-cli streams add-partitioned …`.

RabbitMQ 3.10 (the reference broker) has no super streams; the PUT endpoint, its body
and its error texts follow RabbitMQ 4.x's rabbitmq_stream_management and
rabbit_stream_manager (see docs/compatibility.md for where ours differs), so the whole
module is ours_only.
"""
import json

import pika
import pytest

from conftest import connect, pump_until, uniq
from httpapi import ALL, Api, q
from test_cli import EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_USAGE, binary, cli, home  # noqa: F401

pytestmark = pytest.mark.ours_only

BASE = "/api/stream/super-streams"


@pytest.fixture
def api(http_url):
    return Api(http_url)


@pytest.fixture
def made(api):
    """Names of super streams a test creates in vhost '/'; deleted at the end."""
    names = []
    yield names
    for n in names:
        api.delete(f"{BASE}/%2F/{q(n)}")


def create(api, made, body, name=None, expect=201):
    name = name or uniq("ss")
    made.append(name)
    r = api.put(f"{BASE}/%2F/{q(name)}", body)
    assert r.status == expect, r
    return name


def exists(api, kind, name, vhost="/"):
    return api.get(f"/api/{kind}/{q(vhost)}/{q(name)}").status == 200


def first_message(c, queue, timeout=3.0):
    """Consumes `queue` from offset 'first' (prefetch 10); returns (body, x-stream-offset
    header, routing key) of the first delivery, or None."""
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    got = []
    ch.basic_consume(
        queue,
        lambda ch_, m, p, b: got.append((b, (p.headers or {}).get("x-stream-offset"), m.routing_key)),
        arguments={"x-stream-offset": "first"},
    )
    pump_until(c, lambda: got, timeout)
    ch.close()
    return got[0] if got else None


def publish(c, exchange, key, body):
    ch = c.channel()
    ch.confirm_delivery()
    ch.basic_publish(exchange, key, body, pika.BasicProperties(delivery_mode=2), mandatory=True)
    ch.close()


# =========================================================================== create


def test_create_three_partitions(api, made):
    name = create(api, made, {"partitions": 3})
    x = api.json(f"/api/exchanges/%2F/{q(name)}")
    assert (x["type"], x["durable"], x["auto_delete"], x["internal"]) == ("direct", True, False, False)
    assert x["arguments"] == {"x-super-stream": True}
    for i in range(3):
        qu = api.json(f"/api/queues/%2F/{q(name)}-{i}")
        assert (qu["type"], qu["durable"], qu["auto_delete"], qu["exclusive"]) == ("stream", True, False, False)
        assert qu["arguments"] == {"x-queue-type": "stream", "x-queue-leader-locator": "balanced"}
    bindings = api.json(f"/api/exchanges/%2F/{q(name)}/bindings/source")
    got = sorted((b["destination"], b["destination_type"], b["routing_key"], b["arguments"]) for b in bindings)
    assert got == [(f"{name}-{i}", "queue", str(i), {"x-stream-partition-order": i}) for i in range(3)]
    listed = [s for s in api.json(f"{BASE}/%2F") if s["name"] == name]
    assert listed == [{
        "name": name, "vhost": "/", "partition_count": 3,
        "arguments": {"x-queue-type": "stream", "x-queue-leader-locator": "balanced"},
        "partitions": [{"name": f"{name}-{i}", "routing_key": str(i), "order": i, "state": "running"}
                       for i in range(3)],
    }]
    assert api.json(f"{BASE}/%2F/{q(name)}") == listed[0]
    assert name in [s["name"] for s in api.json(BASE)]


def test_publish_to_the_exchange_lands_in_one_partition(api, made, broker):
    name = create(api, made, {"partitions": 3})
    c = connect(broker)
    try:
        publish(c, name, "1", b"to-one")
        # the other partitions get a marker of their own: it must be their first message
        for i in (0, 2):
            publish(c, "", f"{name}-{i}", b"marker")
        assert first_message(c, f"{name}-1") == (b"to-one", 0, "1")
        for i in (0, 2):
            assert first_message(c, f"{name}-{i}") == (b"marker", 0, f"{name}-{i}")
    finally:
        c.close()


@pytest.mark.parametrize("keys", [["eu", "us"], "eu, us"], ids=["routing_keys list", "binding-keys string"])
def test_routing_keys_name_the_partitions(api, made, broker, keys):
    field = "routing_keys" if isinstance(keys, list) else "binding-keys"
    name = create(api, made, {field: keys})
    s = api.json(f"{BASE}/%2F/{q(name)}")
    assert [(p["name"], p["routing_key"], p["order"]) for p in s["partitions"]] == [
        (f"{name}-eu", "eu", 0), (f"{name}-us", "us", 1)]
    c = connect(broker)
    try:
        publish(c, name, "us", b"hello-us")
        assert first_message(c, f"{name}-us") == (b"hello-us", 0, "us")
    finally:
        c.close()


def test_retention_goes_to_every_partition(api, made):
    name = create(api, made, {"partitions": 2, "arguments": {
        "max-age": "7D", "max-length-bytes": 1000000, "stream-max-segment-size-bytes": "500000"}})
    for i in range(2):
        args = api.json(f"/api/queues/%2F/{q(name)}-{i}")["arguments"]
        assert args == {"x-queue-type": "stream", "x-queue-leader-locator": "balanced", "x-max-age": "7D",
                        "x-max-length-bytes": 1000000, "x-stream-max-segment-size-bytes": 500000}


# =========================================================================== refusals


@pytest.mark.parametrize("body, reason", [
    ({}, "Must specify partitions or binding keys"),
    ({"partitions": 2, "binding-keys": "a"}, "Specify partitions or binding keys, not both"),
    ({"partitions": 0}, "The partition number must be greater than 0"),
    ({"partitions": -5}, "The partition number must be greater than 0"),
    ({"partitions": 1001}, "The partition number must not exceed 1000"),
    ({"partitions": "many"}, "The partitions must be a number"),
    ({"binding-keys": " , "}, "The number of binding keys must be greater than 0"),
    ({"routing_keys": ["a", "b", "a"]}, "Duplicate partition names found"),
    ({"routing_keys": [1]}, "binding keys must be"),
    ({"partitions": 1, "arguments": {"x-max-age": "7D"}}, "unknown argument 'x-max-age'"),
    ({"partitions": 1, "arguments": {"max-age": "1x"}}, "invalid_max_age"),
    ({"partitions": 1, "arguments": {"max-length-bytes": -1}}, "expected a non-negative integer"),
    ({"partitions": 1, "arguments": {"queue-leader-locator": "remote"}}, "invalid_queue_locator_arg"),
    ({"partitions": 1, "arguments": []}, "arguments must be a JSON object"),
])
def test_400_bad_input_creates_nothing(api, made, body, reason):
    name = uniq("ss")
    r = api.put(f"{BASE}/%2F/{q(name)}", body)
    assert r.status == 400 and reason in r.reason(), r
    assert not exists(api, "exchanges", name)
    assert not exists(api, "queues", f"{name}-0")


def test_400_names(api, made):
    r = api.put(f"{BASE}/%2F/amq.ss", {"partitions": 1})
    assert r.status == 400 and "is not a correct name for a super stream" in r.reason(), r
    long = "s" * 254  # a valid exchange name, but NAME-0 is 256 bytes
    r = api.put(f"{BASE}/%2F/{long}", {"partitions": 1})
    assert r.status == 400 and f"partition name '{long}-0' is 256 bytes long" in r.reason(), r
    assert not exists(api, "exchanges", long)
    r = api.call("PUT", f"{BASE}/%2F/x", raw=b"{not json")
    assert r.status == 400 and "not_json" in r.reason(), r


def test_400_when_a_name_is_taken(api, made):
    name = create(api, made, {"partitions": 2})
    r = api.put(f"{BASE}/%2F/{q(name)}", {"partitions": 2})
    assert r.status == 400 and f"there is already an exchange named '{name}'" in r.reason(), r
    other = uniq("ss")
    made.append(other)
    api.ok("PUT", f"/api/queues/%2F/{q(other)}-1", {"durable": True})
    r = api.put(f"{BASE}/%2F/{q(other)}", {"partitions": 3})
    assert r.status == 400 and f"there is already a queue named '{other}-1'" in r.reason(), r
    assert not exists(api, "exchanges", other)
    assert not exists(api, "queues", f"{other}-0")
    api.delete(f"/api/queues/%2F/{q(other)}-1")


def test_400_over_the_vhost_queue_limit(api):
    vh = uniq("ssv")
    api.ok("PUT", f"/api/vhosts/{q(vh)}")
    try:
        api.ok("PUT", f"/api/permissions/{q(vh)}/guest", ALL)
        api.ok("PUT", f"/api/vhost-limits/{q(vh)}/max-queues", {"value": 2})
        r = api.put(f"{BASE}/{q(vh)}/s", {"partitions": 3})
        assert r.status == 400, r
        assert r.reason() == f"Cannot declare super stream 's' with 3 partition(s) because queue limit 2 " \
                             f"in vhost '{vh}' is reached"
        assert not exists(api, "exchanges", "s", vh)
        assert api.put(f"{BASE}/{q(vh)}/s", {"partitions": 2}).status == 201
    finally:
        api.delete(f"/api/vhosts/{q(vh)}")


def test_404_unknown_vhost(api):
    assert api.put(f"{BASE}/nope-{uniq('v')}/s", {"partitions": 1}).status == 404
    assert api.get(f"{BASE}/nope-{uniq('v')}").status == 404


def test_401_without_the_permissions(api, made):
    users = []
    try:
        for perms, name in (({"configure": "^$", "write": ".*", "read": ".*"}, "no-configure"),
                            ({"configure": ".*", "write": "^$", "read": ".*"}, "no-write")):
            u = uniq(name)
            users.append(u)
            api.ok("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": "management"})
            api.ok("PUT", f"/api/permissions/%2F/{q(u)}", perms)
            ss = create(api.as_user(u, "pw"), made, {"partitions": 2}, expect=401)
            assert not exists(api, "exchanges", ss)
            assert not exists(api, "queues", f"{ss}-0")
    finally:
        for u in users:
            api.delete(f"/api/users/{q(u)}")


# =========================================================================== delete, restart


def test_delete_removes_exchange_and_partitions(api, made, broker):
    name = create(api, made, {"partitions": 2})
    assert api.delete(f"{BASE}/%2F/{q(name)}").status == 204
    assert not exists(api, "exchanges", name)
    assert not any(exists(api, "queues", f"{name}-{i}") for i in range(2))
    assert name not in [s["name"] for s in api.json(f"{BASE}/%2F")]
    r = api.delete(f"{BASE}/%2F/{q(name)}")
    assert r.status == 404 and f"no super stream '{name}'" in r.reason(), r
    assert api.get(f"{BASE}/%2F/{q(name)}").status == 404
    # a plain exchange is not a super stream: 404, and it stays
    plain = uniq("plain")
    api.ok("PUT", f"/api/exchanges/%2F/{q(plain)}", {"type": "direct"})
    assert api.delete(f"{BASE}/%2F/{q(plain)}").status == 404
    assert exists(api, "exchanges", plain)
    api.delete(f"/api/exchanges/%2F/{q(plain)}")


def test_in_definitions_export(api, made):
    name = create(api, made, {"partitions": 2})
    d = api.json("/api/definitions")
    assert [x["arguments"] for x in d["exchanges"] if x["name"] == name] == [{"x-super-stream": True}]
    assert sorted(qu["name"] for qu in d["queues"] if qu["name"].startswith(name)) == [f"{name}-0", f"{name}-1"]
    got = sorted((b["destination"], b["routing_key"], b["arguments"]) for b in d["bindings"] if b["source"] == name)
    assert got == [(f"{name}-{i}", str(i), {"x-stream-partition-order": i}) for i in range(2)]


def test_survives_a_restart(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    assert api.put(f"{BASE}/%2F/orders", {"partitions": 2, "arguments": {"max-age": "7D"}}).status == 201
    c = connect(b.port)
    publish(c, "orders", "0", b"before")
    c.close()
    before = api.json(f"{BASE}/%2F/orders")
    b.restart()
    api = Api(b.http_url)
    assert api.json(f"{BASE}/%2F/orders") == before
    c = connect(b.port)
    try:
        publish(c, "orders", "1", b"after")
        assert first_message(c, "orders-0") == (b"before", 0, "0")
        assert first_message(c, "orders-1") == (b"after", 0, "1")
    finally:
        c.close()


# =========================================================================== broker-cli


def test_cli_add_list_delete(cli, api):
    name = uniq("clis")
    try:
        r = cli("streams", "add-partitioned", name, "--partitions", "2", "--max-age", "7D",
                "--max-length-bytes", "1000000", "--segment-size", "500000")
        assert (r.returncode, r.stdout) == (0, f"created partitioned stream '{name}' in vhost '/'\n"), r
        args = api.json(f"/api/queues/%2F/{q(name)}-1")["arguments"]
        assert (args["x-max-age"], args["x-max-length-bytes"], args["x-stream-max-segment-size-bytes"]) == \
            ("7D", 1000000, 500000)
        r = cli("streams", "list-partitioned", "--vhost", "/", "--format", "json")
        assert r.returncode == 0, r
        rows = [row for row in json.loads(r.stdout) if row["name"] == name]
        assert [(row["partition_count"], row["partition_names"]) for row in rows] == [(2, [f"{name}-0", f"{name}-1"])]
        r = cli("streams", "list-partitioned", "--format", "tsv", "--columns", "name,partition_names")
        assert f"{name}\t{name}-0,{name}-1" in r.stdout.splitlines(), r
        # taken, then bad input: refused (6)
        assert cli("streams", "add-partitioned", name, "--partitions", "2").returncode == EXIT_REFUSED
        r = cli("streams", "add-partitioned", uniq("clis"), "--partitions", "0")
        assert r.returncode == EXIT_REFUSED and "greater than 0" in r.stderr, r
        r = cli("streams", "delete-partitioned", name)
        assert (r.returncode, r.stdout) == (0, f"deleted partitioned stream '{name}' in vhost '/'\n"), r
        assert not exists(api, "queues", f"{name}-0")
        r = cli("streams", "delete-partitioned", name)
        assert r.returncode == EXIT_NOT_FOUND, r
    finally:
        api.delete(f"{BASE}/%2F/{q(name)}")


def test_cli_routing_keys_and_usage_errors(cli, api):
    name = uniq("clik")
    try:
        r = cli("streams", "add-partitioned", name, "--routing-keys", "a,b")
        assert r.returncode == 0, r
        assert [p["name"] for p in api.json(f"{BASE}/%2F/{q(name)}")["partitions"]] == [f"{name}-a", f"{name}-b"]
        r = cli("streams", "add-partitioned", uniq("clik"), "--partitions", "2", "--routing-keys", "a")
        assert r.returncode == EXIT_USAGE, r
    finally:
        api.delete(f"{BASE}/%2F/{q(name)}")
