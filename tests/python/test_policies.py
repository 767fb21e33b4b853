"""Policies and operator policies as RabbitMQ applies them: the HTTP API with RabbitMQ's
answers, resolution (priority, operator policy, declared arguments), live application
to existing queues and exchanges, durability, definitions, broker-cli and rabbitmqadmin.

A policy change answers once the matching queues have taken it, so the checks after a
PUT need no waiting; TTL checks wait for the message to expire (an event), by polling.
The `policy` fields of /api/queues are read with `eventually` so that the suite also runs
against RabbitMQ, which refreshes them every few seconds."""
import html
import time

import pika
import pytest

from conftest import connect, uniq
from httpapi import Api, api, eventually, q, reg  # noqa: F401
from test_cli import binary, cli, home, ok  # noqa: F401
from test_rabbitmqadmin import admin, as_json  # noqa: F401


@pytest.fixture
def pol(api):
    """Sets policies (kind 'policies' or 'operator-policies') and clears them afterwards."""
    made = []

    def put(name, definition, pattern, kind="policies", expect=(201, 204), vhost="/", **extra):
        body = {"pattern": pattern, "definition": definition, **extra}
        r = api.put(f"/api/{kind}/{q(vhost)}/{q(name)}", body)
        assert r.status in expect, r
        made.append((kind, vhost, name))
        return r

    yield put
    for kind, vhost, name in made:
        api.delete(f"/api/{kind}/{q(vhost)}/{q(name)}")


@pytest.fixture
def ch(broker):
    c = connect(broker)
    yield c.channel()
    if c.is_open:
        c.close()


def count(ch, queue):
    return ch.queue_declare(queue, passive=True).method.message_count


def publish(ch, queue, *bodies):
    for b in bodies:
        ch.basic_publish("", queue, b)


def queue_info(api, name, vhost="/"):
    return api.json(f"/api/queues/{q(vhost)}/{q(name)}")


def policy_of(api, name, expected):
    """The queue's object once its `policy` field says `expected`."""
    return eventually(lambda: (i := queue_info(api, name)).get("policy") == expected and i)


def reason(r):
    # RabbitMQ 3.10 HTML-escapes these reasons; we do not (docs/compatibility.md)
    return html.unescape(r.reason())


def test_max_length_policy_trims_an_existing_queue(api, pol, ch):
    name = uniq("pol-trim")
    ch.queue_declare(name, auto_delete=False)
    try:
        publish(ch, name, *[b"m%d" % i for i in range(5)])
        assert count(ch, name) == 5
        assert pol("trim-" + name, {"max-length": 2}, f"^{name}$", **{"apply-to": "queues"}).status == 201
        assert count(ch, name) == 2
        assert ch.basic_get(name, auto_ack=True)[2] == b"m3"
        info = policy_of(api, name, "trim-" + name)
        assert info["operator_policy"] is None
        assert info["effective_policy_definition"] == {"max-length": 2}
        assert info["arguments"] == {}
    finally:
        ch.queue_delete(name)


def test_ttl_policy_expires_messages(pol, ch):
    name = uniq("pol-ttl")
    ch.queue_declare(name)
    try:
        pol("ttl-" + name, {"message-ttl": 50}, f"^{name}$")
        publish(ch, name, b"short-lived")
        eventually(lambda: count(ch, name) == 0, timeout=5)
    finally:
        ch.queue_delete(name)


def test_dead_letter_exchange_from_a_policy(pol, ch):
    name, dlq, dlx = uniq("pol-dl"), uniq("pol-dlq"), uniq("pol-dlx")
    ch.exchange_declare(dlx, "fanout")
    ch.queue_declare(dlq)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(name)
    try:
        pol("dlx-" + name, {"dead-letter-exchange": dlx}, f"^{name}$")
        publish(ch, name, b"doomed")
        m = ch.basic_get(name)[0]
        ch.basic_reject(m.delivery_tag, requeue=False)
        got = eventually(lambda: ch.basic_get(dlq, auto_ack=True), timeout=5)
        method, props, body = got
        assert method is not None and body == b"doomed"
        assert props.headers["x-death"][0]["reason"] == "rejected"
        assert props.headers["x-death"][0]["queue"] == name
    finally:
        for n in (name, dlq):
            ch.queue_delete(n)
        ch.exchange_delete(dlx)


def test_highest_priority_wins_and_ties_go_to_the_first_name(api, pol, ch):
    name = uniq("pol-prio")
    ch.queue_declare(name)
    try:
        pol(f"b-{name}", {"max-length": 2}, f"^{name}$", priority=5)
        pol(f"a-{name}", {"max-length": 1}, f"^{name}$", priority=5)
        pol(f"c-{name}", {"max-length": 9}, f"^{name}$", priority=1)
        policy_of(api, name, f"a-{name}")
        pol(f"d-{name}", {"max-length": 3}, f"^{name}$", priority=7)
        publish(ch, name, *[b"x"] * 5)
        assert count(ch, name) == 3
        policy_of(api, name, f"d-{name}")
        # exchanges-only policies never apply to queues
        pol(f"e-{name}", {"max-length": 1}, f"^{name}$", priority=99, **{"apply-to": "exchanges"})
        policy_of(api, name, f"d-{name}")
        publish(ch, name, b"y")
        assert count(ch, name) == 3
    finally:
        ch.queue_delete(name)


def test_operator_policy_stricter_value_wins(api, pol, ch):
    name = uniq("pol-op")
    ch.queue_declare(name)
    try:
        pol("p-" + name, {"max-length": 10, "message-ttl": 60000, "dead-letter-exchange": "nowhere"}, f"^{name}$")
        pol("o-" + name, {"max-length": 3, "message-ttl": 90000}, f"^{name}$", kind="operator-policies")
        info = policy_of(api, name, "p-" + name)
        assert info["operator_policy"] == "o-" + name
        assert info["effective_policy_definition"] == {
            "max-length": 3, "message-ttl": 60000, "dead-letter-exchange": "nowhere"}
        publish(ch, name, *[b"x"] * 6)
        assert count(ch, name) == 3
    finally:
        ch.queue_delete(name)


def test_declared_arguments_combine_with_the_policy_per_key(api, pol, ch):
    name = uniq("pol-args")
    declared = {"x-max-length": 3, "x-overflow": "drop-head"}
    ch.queue_declare(name, arguments=declared)
    try:
        # the smaller max-length wins (declared 3); the declared overflow wins
        pol("a-" + name, {"max-length": 10, "overflow": "reject-publish", "message-ttl": 50}, f"^{name}$")
        publish(ch, name, *[b"m%d" % i for i in range(5)])
        # drop-head kept the newest three; the policy's smaller TTL expires them
        eventually(lambda: count(ch, name) == 0, timeout=5)
        info = policy_of(api, name, "a-" + name)
        assert info["arguments"] == declared
        assert info["effective_policy_definition"]["max-length"] == 10
        # equivalence compares declared arguments only
        ch.queue_declare(name, arguments=declared)
    finally:
        ch.queue_delete(name)


def test_declared_overflow_stays_over_a_policy(pol, ch):
    name = uniq("pol-ovf")
    ch.queue_declare(name, arguments={"x-overflow": "drop-head"})
    try:
        pol("a-" + name, {"max-length": 2, "overflow": "reject-publish"}, f"^{name}$")
        ch.confirm_delivery()
        publish(ch, name, b"1", b"2", b"3")  # drop-head: no nack
        assert ch.basic_get(name, auto_ack=True)[2] == b"2"
    finally:
        ch.queue_delete(name)


def test_deleting_a_policy_restores_the_queue(api, pol, ch):
    name = uniq("pol-del")
    ch.queue_declare(name)
    try:
        pol("r-" + name, {"max-length": 1, "overflow": "reject-publish"}, f"^{name}$")
        ch.confirm_delivery()
        publish(ch, name, b"1")
        with pytest.raises(pika.exceptions.NackError):
            publish(ch, name, b"2")
        assert api.delete(f"/api/policies/%2F/{q('r-' + name)}").status == 204
        publish(ch, name, b"3")
        assert count(ch, name) == 2
        policy_of(api, name, None)
        assert api.delete(f"/api/policies/%2F/{q('r-' + name)}").status == 404
    finally:
        ch.queue_delete(name)


def test_alternate_exchange_from_a_policy(pol, ch):
    x, ae, sink = uniq("pol-x"), uniq("pol-ae"), uniq("pol-sink")
    ch.exchange_declare(x, "direct")
    ch.exchange_declare(ae, "fanout")
    ch.queue_declare(sink)
    ch.queue_bind(sink, ae)
    try:
        pol("ae-" + x, {"alternate-exchange": ae}, f"^{x}$", **{"apply-to": "exchanges"})
        ch.basic_publish(x, "nobody", b"unroutable")
        got = eventually(lambda: ch.basic_get(sink, auto_ack=True)[2], timeout=5)
        assert got == b"unroutable"
    finally:
        ch.queue_delete(sink)
        for e in (x, ae):
            ch.exchange_delete(e)


def test_api_shapes_and_listing(api, pol):
    name = uniq("shape")
    pol(name, {"max-length": 5}, "^shape-", priority=3, **{"apply-to": "queues"})
    assert api.json(f"/api/policies/%2F/{name}") == {
        "vhost": "/", "name": name, "pattern": "^shape-", "apply-to": "queues",
        "definition": {"max-length": 5}, "priority": 3}
    assert any(p["name"] == name for p in api.json("/api/policies"))
    assert any(p["name"] == name for p in api.json("/api/policies/%2F"))
    # an update answers 204; the default apply-to is all, the default priority 0
    assert pol(name, {"max-length": 6}, "^shape-").status == 204
    assert api.json(f"/api/policies/%2F/{name}")["apply-to"] == "all"
    assert api.get("/api/policies/%2F/nonexistent").status == 404
    assert api.put("/api/policies/no-such-vhost/p", {"pattern": "x", "definition": {"max-length": 1}}).json() == {
        "error": "not_found", "reason": "vhost_not_found"}


@pytest.mark.parametrize("definition,text", [
    ({"message-ttl": -1}, "-1 is not a valid message TTL"),
    ({"max-length": "abc"}, '<<"abc">> is not a valid maximum length'),
    ({"overflow": "nope"}, '<<"nope">> is not a valid overflow value'),
    ({"expires": 0}, "0 is not a valid queue expiry"),
    ({"queue-leader-locator": "nope"}, '<<"nope">> is not a valid queue leader locator value'),
    ({"queue-leader-locator": 5}, "5 is not a valid queue leader locator value"),
    ({"nope": 1}, '[{<<"nope">>,1}] are not recognised policy settings'),
    ({"max-priority": 5}, '[{<<"max-priority">>,5}] are not recognised policy settings'),
    ({}, "no policy provided"),
])
def test_bad_definitions_are_refused_with_rabbitmqs_text(api, definition, text):
    r = api.put("/api/policies/%2F/bad", {"pattern": "x", "definition": definition})
    assert (r.status, r.json()["error"]) == (400, "bad_request")
    assert reason(r) == f"Validation failed\n\n{text}\n"


def test_bad_policy_bodies(api):
    r = api.put("/api/policies/%2F/bad", {"definition": {"max-length": 1}})
    assert (r.status, reason(r)) == (400, "[{key_missing,pattern}]")
    r = api.put("/api/policies/%2F/bad", {"pattern": "x", "apply-to": "foo", "definition": {"max-length": 1}})
    assert r.status == 400 and "apply-to 'foo' unrecognised" in reason(r)
    r = api.put("/api/policies/%2F/bad", {"pattern": "(", "definition": {"max-length": 1}})
    assert r.status == 400 and "pattern should be regular expression but is invalid" in reason(r)
    r = api.put("/api/operator-policies/%2F/bad", {"pattern": "x", "definition": {"overflow": "reject-publish"}})
    assert r.status == 400 and "are not recognised policy settings" in reason(r)


def test_who_may_set_policies(api, reg, pol):
    mgmt = reg.user("mgmt", tags="management", perms={"configure": ".*", "write": ".*", "read": ".*"})
    maker = reg.user("maker", tags="policymaker", perms={"configure": ".*", "write": ".*", "read": ".*"})
    body = {"pattern": "^nothing$", "definition": {"max-length": 1}}
    m = api.as_user(mgmt, "pw")
    r = m.put("/api/policies/%2F/by-mgmt", body)
    assert (r.status, r.reason()) == (401, "User not authorised to access object")
    assert m.get("/api/policies").status == 200
    p = api.as_user(maker, "pw")
    assert p.put("/api/policies/%2F/by-maker", body).status == 201
    assert p.delete("/api/policies/%2F/by-maker").status == 204
    assert p.put("/api/operator-policies/%2F/by-maker", body).status == 401


def test_policies_survive_a_restart(own_broker_factory):
    b = own_broker_factory()
    a = Api(b.http_url)
    a.ok("PUT", "/api/policies/%2F/keep", {"pattern": "^kept$", "definition": {"max-length": 1}}, expect=(201,))
    a.ok("PUT", "/api/operator-policies/%2F/opkeep", {"pattern": "^kept$", "definition": {"max-length": 5}}, expect=(201,))
    c = connect(b.port)
    c.channel().queue_declare("kept", durable=True)
    c.close()
    b.restart()
    a = Api(b.http_url)
    assert a.json("/api/policies/%2F/keep")["definition"] == {"max-length": 1}
    assert a.json("/api/operator-policies/%2F/opkeep")["definition"] == {"max-length": 5}
    c = connect(b.port)
    ch = c.channel()
    ch.basic_publish("", "kept", b"1")
    ch.basic_publish("", "kept", b"2")
    assert count(ch, "kept") == 1
    policy_of(a, "kept", "keep")
    c.close()


def test_definitions_round_trip(api, pol):
    name = uniq("defs")
    pol(name, {"max-length": 4}, "^defs-", priority=2, **{"apply-to": "queues"})
    pol(name, {"message-ttl": 1000}, "^defs-", kind="operator-policies")
    d = api.json("/api/definitions")
    mine = [p for p in d["policies"] if p["name"] == name]
    assert mine == [{"vhost": "/", "name": name, "pattern": "^defs-", "apply-to": "queues",
                     "definition": {"max-length": 4}, "priority": 2}]
    ops = [p for p in d["parameters"] if p["name"] == name]
    assert ops == [{"vhost": "/", "component": "operator_policy", "name": name,
                    "value": {"pattern": "^defs-", "definition": {"message-ttl": 1000},
                              "priority": 0, "apply-to": "all"}}]
    api.ok("DELETE", f"/api/policies/%2F/{name}")
    api.ok("DELETE", f"/api/operator-policies/%2F/{name}")
    api.ok("POST", "/api/definitions", {"policies": mine, "parameters": ops})
    assert api.json(f"/api/policies/%2F/{name}")["definition"] == {"max-length": 4}
    assert api.json(f"/api/operator-policies/%2F/{name}")["definition"] == {"message-ttl": 1000}


def test_broker_cli_policies(cli, api):
    name = uniq("clipol")
    try:
        ok(cli("policies", "set", name, "^clipol-", '{"max-length":7}', "--priority", "4", "--apply-to", "queues"))
        assert api.json(f"/api/policies/%2F/{name}")["priority"] == 4
        out = ok(cli("policies", "list"))
        assert name in out and "^clipol-" in out
        ok(cli("policies", "set", name, "^x", '{"max-length":1}', "--operator"))
        assert api.json(f"/api/operator-policies/%2F/{name}")["definition"] == {"max-length": 1}
        assert name in ok(cli("policies", "list", "--operator"))
        r = cli("policies", "set", "bad", "x", '{"message-ttl":-1}')
        assert r.returncode != 0 and "is not a valid message TTL" in r.stderr
        ok(cli("policies", "clear", name))
        ok(cli("policies", "clear", name, "--operator"))
        assert api.get(f"/api/policies/%2F/{name}").status == 404
    finally:
        api.delete(f"/api/policies/%2F/{name}")
        api.delete(f"/api/operator-policies/%2F/{name}")


def test_rabbitmqadmin_policies(admin, api):
    name = uniq("adminpol")
    try:
        admin("declare", "policy", f"name={name}", "pattern=^adminpol-", 'definition={"max-length":3}',
              "apply-to=queues", "priority=1")
        rows = as_json(admin("-f", "raw_json", "list", "policies"))
        assert any(r["name"] == name and r["definition"] == {"max-length": 3} for r in rows)
        admin("delete", "policy", f"name={name}")
        assert api.get(f"/api/policies/%2F/{name}").status == 404
    finally:
        api.delete(f"/api/policies/%2F/{name}")


def test_exclusive_queues_are_matched(pol, ch):
    name = uniq("pol-excl")
    ch.queue_declare(name, exclusive=True)
    pol("x-" + name, {"max-length": 1}, f"^{name}$")
    publish(ch, name, b"1", b"2", b"3")
    assert count(ch, name) == 1


def test_expires_policy_deletes_an_unused_queue(api, pol, ch):
    name = uniq("pol-exp")
    ch.queue_declare(name)
    pol("e-" + name, {"expires": 100}, f"^{name}$")
    eventually(lambda: api.get(f"/api/queues/%2F/{q(name)}").status == 404, timeout=5)


def test_consumer_timeout_policy_cancels_a_stuck_consumer(broker, pol):
    """RabbitMQ 3.12+ key; we cancel the consumer (docs/compatibility.md, Consumer timeout)."""
    name = uniq("pol-cto")
    c = connect(broker)
    ch = c.channel()
    try:
        ch.queue_declare(name)
        pol("t-" + name, {"consumer-timeout": 200}, f"^{name}$")
        cancelled = []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        tag = ch.basic_consume(name, lambda *a: None)
        publish(ch, name, b"held")
        deadline = time.monotonic() + 5
        while not cancelled and time.monotonic() < deadline:
            c.process_data_events(time_limit=0.05)
        assert cancelled == [tag]
        assert count(ch, name) == 1
    finally:
        ch.queue_delete(name)
        c.close()


def test_per_vhost_definitions_keep_policies(api, reg):
    vhost = reg.vhost("polv")
    api.ok("PUT", f"/api/policies/{q(vhost)}/p", {"pattern": "^a", "definition": {"max-length": 1}}, expect=(201,))
    d = api.json(f"/api/definitions/{q(vhost)}")
    assert d["policies"] == [{"vhost": vhost, "name": "p", "pattern": "^a", "apply-to": "all",
                              "definition": {"max-length": 1}, "priority": 0}]
    # deleting the vhost deletes its policies
    api.ok("DELETE", f"/api/vhosts/{q(vhost)}")
    api.ok("PUT", f"/api/vhosts/{q(vhost)}", expect=(201,))
    assert api.json(f"/api/policies/{q(vhost)}") == []
