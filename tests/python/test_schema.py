"""JSON Schema validation per exchange (ours: no RabbitMQ or LavinMQ equivalent),
driven as a client and an operator use it: the registry at /api/schemas, an
exchange's `x-schema` argument or a policy's `schema` key, and what a publish that
fails becomes.

A JSON body (content type application/json or application/*+json) that does not parse
or does not match fails; other content types pass unless `x-schema-require-json`. A
message that fails goes to the exchange's `x-schema-invalid-exchange` (with
`x-schema-error` and `x-schema-name` headers), else it is refused: basic.return 312
with the error in the reply text when mandatory, basic.nack in confirm mode, dropped
otherwise; every failure is counted (`message_stats.schema_invalid`,
`broker_exchange_schema_rejected_total`).
"""
import json
import os
import subprocess
import time
import urllib.request

import pika
import pytest

from conftest import connect, get_n, ready_count, uniq
from httpapi import ALL, Api, api, q, reg  # noqa: F401 (the api and reg fixtures)

pytestmark = pytest.mark.ours_only

ORDER = {
    "type": "object",
    "required": ["id", "qty"],
    "properties": {"id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
}
JSON = pika.BasicProperties(content_type="application/json")
GOOD = json.dumps({"id": "a", "qty": 2}).encode()
BAD = json.dumps({"id": "a", "qty": 0}).encode()


@pytest.fixture
def schema(api):
    """Adds schemas to / for the test; deletes them (and what uses them) after."""
    made = []

    def add(body=None, vhost="/", name=None, expect=(201,)):
        name = name or uniq("s")
        made.append((vhost, name))
        r = api.put(f"/api/schemas/{q(vhost)}/{q(name)}", {"schema": body or ORDER, "description": "orders"})
        assert r.status in expect, r
        return name

    yield add
    for vhost, name in made:
        api.delete(f"/api/schemas/{q(vhost)}/{q(name)}")


@pytest.fixture
def ch(conn):
    c = conn.channel()
    c.confirm_delivery()
    return c


def checked_exchange(ch, scratch, name, **args):
    x = scratch.exchange("sx")
    ch.exchange_declare(x, "direct", arguments={"x-schema": name, **args})
    qn = scratch.queue("sq")
    ch.queue_declare(qn)
    ch.queue_bind(qn, x, "rk")
    return x, qn


def nacked(ch, x, body, props=JSON, mandatory=False):
    try:
        ch.basic_publish(x, "rk", body, props, mandatory=mandatory)
        return False
    except pika.exceptions.NackError:
        return True


def test_valid_passes_invalid_is_nacked(ch, scratch, schema, api):
    x, qn = checked_exchange(ch, scratch, schema())
    assert not nacked(ch, x, GOOD)
    assert nacked(ch, x, BAD)
    assert nacked(ch, x, b"{not json")
    # nesting past serde_json's limit (128) fails; the connection lives on
    assert nacked(ch, x, b"[" * 100000)
    assert [b for _, _, b in get_n(ch, qn, 1)] == [GOOD]
    assert ready_count(ch, qn) == 0
    info = api.json(f"/api/exchanges/%2F/{q(x)}")
    assert info["schema_status"] == "ok"
    assert info["message_stats"]["schema_invalid"] == 3
    metrics = api.get("/metrics").body.decode()
    assert f'broker_exchange_schema_rejected_total{{vhost="/",exchange="{x}"}} 3' in metrics


def test_other_content_types_pass_unless_json_is_required(ch, scratch, schema):
    name = schema()
    x, qn = checked_exchange(ch, scratch, name)
    for props in (None, pika.BasicProperties(content_type="text/plain")):
        assert not nacked(ch, x, b"anything", props)
    # JSON by its parameters and +json suffix is checked
    for ct in ("application/json; charset=utf-8", "application/vnd.order+json"):
        assert nacked(ch, x, BAD, pika.BasicProperties(content_type=ct))
    assert len(get_n(ch, qn, 2)) == 2
    strict, sq = checked_exchange(ch, scratch, name, **{"x-schema-require-json": True})
    assert nacked(ch, strict, b"anything", pika.BasicProperties(content_type="text/plain"))
    assert nacked(ch, strict, GOOD, None)
    assert not nacked(ch, strict, GOOD)
    assert ready_count(ch, sq) == 1


def test_invalid_and_mandatory_is_returned_with_the_error(conn, scratch, schema):
    ch = conn.channel()
    x, qn = checked_exchange(ch, scratch, schema())
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, b)))
    ch.basic_publish(x, "rk", BAD, JSON, mandatory=True)
    ch.basic_publish(x, "rk", GOOD, JSON, mandatory=True)
    deadline = time.monotonic() + 5
    while not returned and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    assert len(returned) == 1
    method, body = returned[0]
    assert method.reply_code == 312
    assert method.reply_text.startswith("NO_ROUTE - message refused by schema"), method.reply_text
    assert "/qty" in method.reply_text and "minimum" in method.reply_text
    assert body == BAD
    assert [b for _, _, b in get_n(ch, qn, 1)] == [GOOD]


def test_invalid_goes_to_the_invalid_exchange_with_the_error(ch, scratch, schema):
    name = schema()
    dead = scratch.exchange("invalid")
    ch.exchange_declare(dead, "fanout")
    dq = scratch.queue("invalidq")
    ch.queue_declare(dq)
    ch.queue_bind(dq, dead, "")
    x, qn = checked_exchange(ch, scratch, name, **{"x-schema-invalid-exchange": dead})
    # routed there: the confirm is an ack
    assert not nacked(ch, x, BAD, pika.BasicProperties(content_type="application/json", headers={"k": 1}))
    assert not nacked(ch, x, GOOD)
    [(method, props, body)] = get_n(ch, dq, 1)
    assert body == BAD and method.routing_key == "rk"
    assert props.headers["x-schema-name"] == name
    assert props.headers["k"] == 1
    assert "/qty" in props.headers["x-schema-error"]
    assert len(props.headers["x-schema-error"]) <= 1024
    assert [b for _, _, b in get_n(ch, qn, 1)] == [GOOD]


def test_unknown_schema_and_bad_arguments_are_406(conn, scratch):
    for args, text in [
        ({"x-schema": "no-such-schema"}, "unknown schema 'no-such-schema' for arg 'x-schema'"),
        ({"x-schema": 5}, "invalid type"),
        ({"x-schema": "s", "x-schema-require-json": "yes"}, "for arg 'x-schema-require-json'"),
    ]:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(scratch.exchange("bad"), "direct", arguments=args)
        assert e.value.reply_code == 406
        assert text in e.value.reply_text, e.value.reply_text


def test_schema_by_policy_and_argument_wins(ch, scratch, schema, api):
    strict = schema()
    anything = schema({"type": "object"})
    x, qn = checked_exchange(ch, scratch, anything)
    px = scratch.exchange("polx")
    ch.exchange_declare(px, "direct")
    pq = scratch.queue("polq")
    ch.queue_declare(pq)
    ch.queue_bind(pq, px, "rk")
    pol = uniq("schema-pol")
    api.ok("PUT", f"/api/policies/%2F/{pol}", {"pattern": f"^({px}|{x})$", "apply-to": "exchanges",
                                                "definition": {"schema": strict}})
    try:
        assert nacked(ch, px, BAD)
        # the declared argument wins over the policy's key
        assert not nacked(ch, x, BAD)
        assert api.json(f"/api/exchanges/%2F/{q(px)}")["schema"] == strict
    finally:
        api.delete(f"/api/policies/%2F/{pol}")
    assert not nacked(ch, px, BAD)


def test_put_again_replaces_the_schema(ch, scratch, schema):
    name = schema()
    x, _ = checked_exchange(ch, scratch, name)
    assert nacked(ch, x, BAD)
    schema({"type": "object"}, name=name, expect=(204,))
    assert not nacked(ch, x, BAD)


def test_registry_api_errors_and_delete_in_use(api, scratch, conn, schema):
    r = api.put("/api/schemas/%2F/broken", {"schema": {"type": "nonsense"}})
    assert r.status == 400 and "invalid schema" in r.reason(), r
    r = api.put("/api/schemas/%2F/remote", {"schema": {"$ref": "http://example.com/s.json"}})
    assert r.status == 400 and "example.com" in r.reason(), r
    r = api.put("/api/schemas/%2F/huge", {"schema": {"description": "x" * (1 << 20)}})
    assert r.status == 400 and "too large" in r.reason(), r
    assert api.put("/api/schemas/%2F/noschema", {"description": "d"}).status == 400
    assert api.put("/api/schemas/no-such-vhost/s", {"schema": ORDER}).status == 404
    name = schema()
    got = api.json(f"/api/schemas/%2F/{name}")
    assert got == {"vhost": "/", "name": name, "description": "orders", "schema": ORDER}
    assert any(s["name"] == name for s in api.json("/api/schemas"))
    assert any(s["name"] == name for s in api.json("/api/schemas/%2F"))
    ch = conn.channel()
    x, _ = checked_exchange(ch, scratch, name)
    # in use by an exchange: refused, the exchange keeps checking
    r = api.delete(f"/api/schemas/%2F/{name}")
    assert r.status == 409 and x in r.reason(), r
    ch.exchange_delete(x)
    # in use by a policy
    pol = uniq("schema-pol")
    api.ok("PUT", f"/api/policies/%2F/{pol}", {"pattern": "^nothing$", "definition": {"schema": name}})
    r = api.delete(f"/api/schemas/%2F/{name}")
    assert r.status == 409 and pol in r.reason(), r
    api.delete(f"/api/policies/%2F/{pol}")
    assert api.delete(f"/api/schemas/%2F/{name}").status == 204
    assert api.get(f"/api/schemas/%2F/{name}").status == 404
    assert api.delete(f"/api/schemas/%2F/{name}").status == 404


def test_permissions_follow_policies(api, reg, schema):
    name = schema()
    plain = reg.user("plain", tags="management", perms=ALL)
    maker = reg.user("maker", tags="policymaker", perms=ALL)
    as_plain, as_maker = api.as_user(plain, "pw"), api.as_user(maker, "pw")
    assert as_plain.get(f"/api/schemas/%2F/{name}").status == 200
    assert as_plain.put("/api/schemas/%2F/p", {"schema": ORDER}).status == 401
    assert as_plain.delete(f"/api/schemas/%2F/{name}").status == 401
    other = reg.vhost("novh", grant_guest=False)
    assert as_maker.put(f"/api/schemas/{q(other)}/p", {"schema": ORDER}).status == 401
    assert as_maker.put("/api/schemas/%2F/bymaker", {"schema": ORDER}).status == 201
    assert as_maker.delete("/api/schemas/%2F/bymaker").status == 204


def test_http_publish_is_checked(api, scratch, conn, schema):
    ch = conn.channel()
    x, qn = checked_exchange(ch, scratch, schema())
    base = {"routing_key": "rk", "payload_encoding": "string",
            "properties": {"content_type": "application/json"}}
    r = api.post(f"/api/exchanges/%2F/{q(x)}/publish", {**base, "payload": BAD.decode()})
    assert r.status == 400 and "refused by schema" in r.reason(), r
    r = api.post(f"/api/exchanges/%2F/{q(x)}/publish", {**base, "payload": GOOD.decode()})
    assert r.status == 200 and r.json()["routed"] is True


def test_definitions_round_trip(api, scratch, conn, schema, reg):
    name = schema()
    ch = conn.channel()
    x = scratch.exchange("defx")
    ch.exchange_declare(x, "direct", durable=True, arguments={"x-schema": name})
    defs = api.json("/api/definitions")
    assert {"vhost": "/", "name": name, "description": "orders", "schema": ORDER} in defs["schemas"]
    # into a fresh vhost through the per-vhost import
    vh = reg.vhost("defs")
    mine = {"schemas": [s for s in defs["schemas"] if s["name"] == name],
            "exchanges": [e for e in defs["exchanges"] if e["name"] == x]}
    for item in mine["schemas"] + mine["exchanges"]:
        item.pop("vhost")
    api.ok("POST", f"/api/definitions/{q(vh)}", mine)
    assert api.json(f"/api/schemas/{q(vh)}/{name}")["schema"] == ORDER
    assert api.json(f"/api/exchanges/{q(vh)}/{q(x)}")["schema_status"] == "ok"
    # an export without `schemas` (RabbitMQ's) still imports
    api.ok("POST", "/api/definitions", {"exchanges": [{"vhost": vh, "name": "plain", "type": "fanout",
                                                        "durable": True, "auto_delete": False,
                                                        "internal": False, "arguments": {}}]})
    assert api.get(f"/api/exchanges/{q(vh)}/plain").status == 200


@pytest.mark.parametrize("stop", ["restart", "kill9"])
def test_registry_and_attachment_survive(own_broker_factory, stop):
    b = own_broker_factory()
    api = Api(b.http_url)
    api.ok("PUT", "/api/schemas/%2F/orders", {"schema": ORDER}, expect=(201,))
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    ch.exchange_declare("ox", "direct", durable=True, arguments={"x-schema": "orders"})
    ch.queue_declare("oq", durable=True)
    ch.queue_bind("oq", "ox", "rk")
    px = "polx"
    ch.exchange_declare(px, "fanout", durable=True)
    api.ok("PUT", "/api/policies/%2F/p", {"pattern": "^polx$", "definition": {"schema": "orders"}})
    assert nacked(ch, "ox", BAD) and nacked(ch, px, BAD)
    if stop == "kill9":
        b.proc.kill()
        b.proc.wait(timeout=10)
        b._launch()
    else:
        c.close()
        b.restart()
    api = Api(b.http_url)
    assert api.json("/api/schemas/%2F/orders")["schema"] == ORDER
    c = connect(b.port)
    ch = c.channel()
    ch.confirm_delivery()
    assert nacked(ch, "ox", BAD) and nacked(ch, px, BAD)
    assert not nacked(ch, "ox", GOOD)
    assert api.json("/api/exchanges/%2F/ox")["schema_status"] == "ok"
    c.close()


def cli_bin():
    b = os.environ.get("BROKER_CLI_BIN")
    if not b:
        pytest.skip("BROKER_CLI_BIN not set")
    return b


def test_broker_cli_schemas(http_url, tmp_path, api):
    binary = cli_bin()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BROKER_CLI_")}, "HOME": str(tmp_path)}

    def run(*args):
        return subprocess.run([binary, *args, "--url", http_url], capture_output=True, text=True,
                              env=env, timeout=60)

    name = uniq("cli-s")
    f = tmp_path / "s.json"
    f.write_text(json.dumps(ORDER))
    r = run("schemas", "add", name, "--file", str(f), "--description", "from cli")
    assert r.returncode == 0, r.stderr
    assert api.json(f"/api/schemas/%2F/{name}")["description"] == "from cli"
    r = run("schemas", "add", name + "2", '{"type":"object"}')
    assert r.returncode == 0, r.stderr
    r = run("schemas", "list", "--format", "json")
    assert r.returncode == 0, r.stderr
    names = {s["name"] for s in json.loads(r.stdout)}
    assert {name, name + "2"} <= names
    ex = run("exchanges", "list", "--columns", "name,schema,schema_status,message_stats.schema_invalid",
             "--format", "json")
    assert ex.returncode == 0, ex.stderr
    r = run("schemas", "add", "broken", '{"type":"nonsense"}')
    assert r.returncode == 6 and "invalid schema" in r.stderr, r.stderr
    for n in (name, name + "2"):
        assert run("schemas", "delete", n).returncode == 0
    r = run("schemas", "delete", name)
    assert r.returncode == 5, r.stderr
