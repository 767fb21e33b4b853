"""Hostile callers of the management API (issue 11): no caller can slip past a permission,
learn what exists before logging in, or take the broker's memory with request bodies;
names that become AMQP short strings are refused over 255 bytes; the API's publish makes
the checks an AMQP publish makes, with RabbitMQ 3.10's answers.

Tests that match RabbitMQ run against it too (BROKER_CLI_TEST_URL=http://127.0.0.1:15673
AMQP_TEST_PORT=5673); `ours_only` marks where we deliberately refuse more than it does."""
import base64
import socket
import subprocess
import urllib.parse

import pytest

from conftest import round_trip
from httpapi import ALL, Api, amqp, api, eventually, q, reg  # noqa: F401
from test_cli import EXIT_REFUSED, binary, cli, fails, home  # noqa: F401

LONG = "k" * 256
PUB = {"payload": "x", "payload_encoding": "string", "properties": {}}


def take(api, name):
    """Takes every message off a queue through the API; returns their payloads."""
    got = api.post(f"/api/queues/%2F/{q(name)}/get",
                   {"count": 10, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert got.status == 200, got
    return [m["payload"] for m in got.json()]


def publish(api, exchange, routing_key, **extra):
    body = dict(PUB, routing_key=routing_key, **extra)
    return api.post(f"/api/exchanges/%2F/{q(exchange)}/publish", body)


def host_port(base):
    u = urllib.parse.urlsplit(base)
    return u.hostname, u.port


def raw_request(base, head, timeout=5.0):
    """Sends request headers only (the body never follows) and returns the status line
    and the rest of what the server answers before closing or the timeout."""
    host, port = host_port(base)
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head.encode())
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    return data.decode(errors="replace")


def own_address():
    """A non-loopback IPv4 address of this machine (bindable here, so traffic to it never
    leaves the machine), or None."""
    candidates = []
    try:
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=5).stdout
        candidates += out.split()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        candidates += [a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)]
    except OSError:
        pass
    for a in candidates:
        if ":" in a or a.startswith("127."):
            continue
        try:
            with socket.socket() as s:
                s.bind((a, 0))
            return a
        except OSError:
            continue
    return None


# --------------------------------------------------------------------------- 1: loopback users


@pytest.mark.own_broker
def test_loopback_user_is_refused_over_http_from_another_address(own_broker_factory):
    addr = own_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback IPv4 address to request from")
    b = own_broker_factory("--http-listen", "0.0.0.0:0")
    _, port = host_port(b.http_url)
    local, remote = Api(f"http://127.0.0.1:{port}"), Api(f"http://{addr}:{port}")
    assert local.get("/api/users").status == 200
    r = remote.get("/api/users")
    assert r.status == 401, r
    assert r.json() == {"error": "not_authorised", "reason": "User can only log in via localhost"}
    assert r.headers["WWW-Authenticate"] == 'Basic realm="RabbitMQ Management"'
    # other users are not restricted
    local.ok("PUT", "/api/users/remote-admin", {"password": "pw", "tags": "administrator"})
    assert remote.as_user("remote-admin", "pw").get("/api/users").status == 200


# --------------------------------------------------------------------------- 2: closing connections


def connection_of(api, user, conns):
    rows = eventually(lambda: [c for c in api.json("/api/connections") if c["user"] == user] or False,
                      conns=conns)
    return rows[0]["name"]


def test_monitoring_user_may_not_close_another_users_connection(api, reg, amqp):
    mon = reg.user(tags="monitoring", perms=ALL)
    victim = amqp()
    name = connection_of(api, "guest", [victim])
    r = api.as_user(mon, "pw").delete(f"/api/connections/{q(name)}")
    assert r.status == 401, r
    assert r.json() == {"error": "not_authorised", "reason": "User not authorised to access object"}
    round_trip(victim)


def test_management_user_may_close_its_own_connection(api, reg, amqp):
    me = reg.user(tags="management", perms=ALL)
    mine = amqp(user=me, password="pw")
    name = connection_of(api, me, [mine])
    assert api.as_user(me, "pw").delete(f"/api/connections/{q(name)}").status == 204


# --------------------------------------------------------------------------- 3: the reserved name


@pytest.mark.ours_only
def test_internal_user_name_is_reserved(api):
    r = api.put("/api/users/rmq-internal", {"password": "pw", "tags": "administrator"})
    assert r.status == 400, r
    assert "reserved" in r.reason(), r
    r = api.post("/api/definitions", {"users": [
        {"name": "rmq-internal", "password_hash": "", "tags": "administrator"}]})
    assert r.status == 400, r
    assert "reserved" in r.reason(), r
    assert api.get("/api/users/rmq-internal").status == 404


@pytest.mark.ours_only
def test_internal_user_name_is_reserved_for_broker_cli(cli, api):
    fails(cli("users", "add", "rmq-internal", "pw"), EXIT_REFUSED, "reserved")
    assert api.get("/api/users/rmq-internal").status == 404


# --------------------------------------------------------------------------- 4, 5: before logging in


@pytest.mark.parametrize("auth", ["", "Authorization: Basic " + base64.b64encode(b"guest:wrong").decode() + "\r\n"])
def test_credentials_are_checked_before_the_body_is_read(api, auth):
    """The request announces 16 MB and sends none of it: the answer must not wait for it."""
    head = (f"PUT /api/queues/%2F/never HTTP/1.1\r\nHost: x\r\n{auth}"
            "Content-Type: application/json\r\nContent-Length: 16000000\r\n\r\n")
    answer = raw_request(api.base, head)
    assert answer.startswith("HTTP/1.1 401"), answer[:200]


def test_unauthenticated_requests_get_401_whatever_the_vhost(api, reg):
    missing = "no-such-vhost-x"
    for auth_api in (api.as_user("guest", "wrong"), None):
        for method, path, body in [
            ("GET", "/api/queues/{v}", None),
            ("GET", "/api/exchanges/{v}/amq.direct", None),
            ("GET", "/api/vhosts/{v}", None),
            ("PUT", "/api/queues/{v}/q1", {}),
            ("POST", "/api/definitions/{v}", {"queues": []}),
            ("POST", "/api/exchanges/{v}/amq.direct/publish", dict(PUB, routing_key="k")),
        ]:
            answers = []
            for v in ("/", missing):
                p = path.format(v=q(v))
                if auth_api is None:
                    r = api.call(method, p, body=body, auth=False)
                else:
                    r = auth_api.call(method, p, body=body)
                answers.append((r.status, r.body))
            assert answers[0] == answers[1], (method, path, answers)
            assert answers[0][0] == 401, (method, path, answers)


@pytest.mark.ours_only
def test_request_bodies_in_flight_are_bounded(api, reg):
    """Eight uploads that never finish take every body slot: a ninth request with a body
    is refused (503) without being read, requests without one still work, and the slots
    come back when the uploads go away."""
    host, port = host_port(api.base)
    token = base64.b64encode(b"guest:guest").decode()
    slow = []
    try:
        for i in range(8):
            s = socket.create_connection((host, port), timeout=5)
            slow.append(s)
            s.sendall((f"PUT /api/queues/%2F/slow-{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
                       "Content-Type: application/json\r\nContent-Length: 16000000\r\n\r\n{").encode())
        name = reg.queue()

        def refused():
            r = api.put(f"/api/queues/%2F/{q(name)}", {})
            assert r.status == 503, r
            return r

        r = eventually(refused)
        assert r.json()["error"] == "service_unavailable"
        assert api.get("/api/overview").status == 200
    finally:
        for s in slow:
            s.close()
    eventually(lambda: api.put(f"/api/queues/%2F/{q(name)}", {}).status == 201)


# --------------------------------------------------------------------------- 6: publish


def test_publish_refuses_a_foreign_user_id(api, reg, amqp):
    name = reg.queue(body={})
    r = publish(api, "amq.default", name, properties={"user_id": "bob"})
    assert r.status == 400, r
    assert r.json() == {"error": "bad_request", "reason":
                        "406 PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'"}
    r = publish(api, "amq.default", name, properties={"user_id": "guest"})
    assert (r.status, r.json()) == (200, {"routed": True})
    got = api.post(f"/api/queues/%2F/{q(name)}/get", {"count": 5, "ackmode": "ack_requeue_false",
                                                     "encoding": "auto"}).json()
    assert [m["properties"].get("user_id") for m in got] == ["guest"]


@pytest.mark.parametrize("expiration", ["abc", "-5"])
def test_publish_refuses_an_invalid_expiration(api, reg, expiration):
    name = reg.queue(body={})
    r = publish(api, "amq.default", name, properties={"expiration": expiration})
    assert r.status == 400, r
    assert r.reason().startswith(f"406 PRECONDITION_FAILED - invalid expiration '{expiration}'"), r
    assert take(api, name) == []


def test_publish_to_an_internal_exchange_is_refused(api, reg):
    x = reg.exchange(body={"type": "fanout", "internal": True})
    r = publish(api, x, "k")
    assert r.status == 400, r
    assert r.reason() == f"403 ACCESS_REFUSED - cannot publish to internal exchange '{x}' in vhost '/'"


def test_publish_to_a_missing_exchange(api):
    r = publish(api, "no-such-exchange-x", "k")
    assert r.status == 400, r
    assert r.reason() == "404 NOT_FOUND - no exchange 'no-such-exchange-x' in vhost '/'"


def test_publish_to_a_full_reject_publish_queue_is_rejected(api, reg):
    name = reg.queue(body={"arguments": {"x-max-length": 1, "x-overflow": "reject-publish"}})
    assert publish(api, "amq.default", name).json() == {"routed": True}
    r = publish(api, "amq.default", name)
    assert r.status == 400, r
    assert r.reason() == "rejected Unable to publish message. Check queue limits."
    assert take(api, name) == ["x"]


@pytest.mark.ours_only
def test_publish_is_refused_during_the_memory_alarm(own_broker_factory):
    b = own_broker_factory()
    a = Api(b.http_url)
    a.ok("PUT", "/api/queues/%2F/big", {})
    assert publish(a, "amq.default", "big", payload="y" * 2000).json() == {"routed": True}
    a.ok("PUT", "/api/nodes/broker@localhost/memory-high-watermark", {"limit": "0"})
    r = publish(a, "amq.default", "big")
    assert r.status == 503, r
    assert r.json()["error"] == "service_unavailable" and "memory alarm" in r.reason(), r
    a.ok("PUT", "/api/nodes/broker@localhost/memory-high-watermark", {"limit": "0.6"})
    assert publish(a, "amq.default", "big").status == 200


# --------------------------------------------------------------------------- 7: short strings


@pytest.mark.ours_only
@pytest.mark.parametrize("case", [
    "queue", "exchange", "dlx", "dlrk", "binding", "publish-key", "property", "header", "user", "vhost"])
def test_names_over_255_bytes_are_refused(api, reg, case):
    name = reg.queue(body={})
    calls = {
        "queue": ("PUT", f"/api/queues/%2F/{LONG}", {}),
        "exchange": ("PUT", f"/api/exchanges/%2F/{LONG}", {"type": "direct"}),
        "dlx": ("PUT", f"/api/queues/%2F/{q(name)}-dl", {"arguments": {"x-dead-letter-exchange": LONG}}),
        "dlrk": ("PUT", f"/api/queues/%2F/{q(name)}-dl",
                 {"arguments": {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": LONG}}),
        "binding": ("POST", f"/api/bindings/%2F/e/amq.direct/q/{q(name)}", {"routing_key": LONG}),
        "publish-key": ("POST", "/api/exchanges/%2F/amq.default/publish", dict(PUB, routing_key=LONG)),
        "property": ("POST", "/api/exchanges/%2F/amq.default/publish",
                     dict(PUB, routing_key=name, properties={"content_type": LONG})),
        "header": ("POST", "/api/exchanges/%2F/amq.default/publish",
                   dict(PUB, routing_key=name, properties={"headers": {LONG: 1}})),
        "user": ("PUT", f"/api/users/{LONG}", {"password": "pw", "tags": ""}),
        "vhost": ("PUT", f"/api/vhosts/{LONG}", {}),
    }
    method, path, body = calls[case]
    r = api.call(method, path, body=body)
    assert r.status == 400, r
    assert "the most is 255" in r.reason(), r
    # nothing was made, and the API still answers
    assert take(api, name) == []
    assert api.get(f"/api/queues/%2F/{q(name)}-dl").status == 404
    assert api.get(f"/api/users/{LONG}").status == 404
    assert api.get(f"/api/vhosts/{LONG}").status == 404


@pytest.mark.ours_only
def test_names_of_255_bytes_are_accepted(api, reg):
    name = "q" * 255
    reg.queues.append(("/", name))
    api.ok("PUT", f"/api/queues/%2F/{name}", {}, expect=(201,))
    assert publish(api, "amq.default", name).json() == {"routed": True}
