"""The management HTTP API (RabbitMQ's paths, status codes and field names) and the
users, vhosts, permissions and vhost limits it manages, checked over HTTP and AMQP.

Written against RabbitMQ 3.10 (everything not marked ours_only passes there):
    BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673 pytest test_http_api.py
RabbitMQ refreshes message counts and connection lists every few seconds, so checks on
them poll (`eventually`). AMQP permission enforcement is in test_access.py."""
import base64
import time
import urllib.parse

import pika
import pytest

from conftest import uniq
from httpapi import (ALL, Api, amqp, api, channel_error, check_rabbit_hash, eventually, q,  # noqa: F401
                     rabbit_hash, reg, refusal, wait_closed)

LOGIN_REFUSED = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN"


# --------------------------------------------------------------------------- authentication


def test_no_credentials_is_401(api):
    r = api.get("/api/overview", auth=False)
    assert r.status == 401
    assert r.headers.get("www-authenticate", "").startswith("Basic ")


def test_wrong_password_is_401(api):
    r = api.as_user("guest", "not-the-password").get("/api/overview")
    assert r.status == 401
    assert r.headers.get("www-authenticate", "").startswith("Basic ")
    assert r.json() == {"error": "not_authorized", "reason": "Login failed"}
    r = api.as_user(uniq("nobody"), "x").get("/api/whoami")
    assert r.status == 401 and r.reason() == "Login failed"


def test_user_without_tags_may_not_use_the_api_but_may_use_amqp(api, reg, amqp):
    u = reg.user(tags="", perms=ALL)
    other = api.as_user(u, "pw")
    for path in ("/api/overview", "/api/whoami", "/api/queues"):
        r = other.get(path)
        assert r.status == 401, (path, r)
        assert r.reason() == "Not management user", (path, r)
    c = amqp(user=u, password="pw")
    assert c.is_open


def test_management_user(api, reg):
    v = reg.vhost()
    hidden = reg.vhost()
    u = reg.user(tags="management")
    api.ok("PUT", f"/api/permissions/{q(v)}/{q(u)}", ALL)
    m = api.as_user(u, "pw")
    ov = m.get("/api/overview")
    assert ov.status == 200 and "object_totals" in ov.json()
    assert m.json("/api/whoami") == {"name": u, "tags": ["management"]}
    for path in ("/api/users", "/api/users/guest", "/api/permissions"):
        r = m.get(path)
        assert r.status == 401, (path, r)
        assert r.reason() == "Not administrator user"
    r = m.put(f"/api/vhosts/{q(uniq('v'))}")
    assert r.status == 401 and r.reason() == "Not administrator user"
    # it sees only the vhosts it has permissions in
    names = [x["name"] for x in m.json("/api/vhosts")]
    assert v in names and hidden not in names and "/" not in names


def test_monitoring_user_sees_all_vhosts_but_not_users(api, reg):
    v = reg.vhost()
    u = reg.user(tags="monitoring")
    m = api.as_user(u, "pw")
    assert m.json("/api/whoami") == {"name": u, "tags": ["monitoring"]}
    assert m.get("/api/overview").status == 200
    for path in ("/api/users", f"/api/users/{q(u)}", "/api/permissions"):
        r = m.get(path)
        assert r.status == 401, (path, r)
        assert r.reason() == "Not administrator user"
    names = [x["name"] for x in m.json("/api/vhosts")]
    assert v in names and "/" in names  # no permissions needed to see them
    assert m.get("/api/connections").status == 200
    assert m.get("/api/queues").status == 200


def test_refusals_use_rabbitmqs_error_words(api, reg):
    """RabbitMQ says "not_authorised" when the tags refuse, "not_authorized" when the login does."""
    u = reg.user(tags="")
    assert api.as_user(u, "pw").get("/api/overview").json() == {
        "error": "not_authorised", "reason": "Not management user"}
    m = reg.user(tags="management")
    assert api.as_user(m, "pw").get("/api/users").json() == {
        "error": "not_authorised", "reason": "Not administrator user"}
    assert api.as_user(m, "wrong").get("/api/overview").json() == {
        "error": "not_authorized", "reason": "Login failed"}


# --------------------------------------------------------------------------- overview, whoami


def test_whoami(api):
    assert api.json("/api/whoami") == {"name": "guest", "tags": ["administrator"]}


def test_overview_fields_and_totals(api, reg, amqp):
    ov = api.json("/api/overview")
    for key in ("product_name", "product_version", "rabbitmq_version", "management_version", "node",
                "cluster_name", "listeners"):
        assert key in ov, key
    assert isinstance(ov["product_name"], str) and ov["product_name"]
    assert isinstance(ov["product_version"], str) and ov["product_version"]
    for key in ("connections", "channels", "exchanges", "queues", "consumers"):
        assert isinstance(ov["object_totals"][key], int), key
    for key in ("messages", "messages_ready", "messages_unacknowledged"):
        assert key in ov["queue_totals"], key
    queues_before = ov["object_totals"]["queues"]
    messages_before = ov["queue_totals"]["messages"]

    name = reg.queue()
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    ch.queue_declare(name)
    for i in range(3):
        ch.basic_publish("", name, b"m%d" % i)

    def grown():
        o = api.json("/api/overview")
        assert o["object_totals"]["queues"] >= queues_before + 1, o["object_totals"]
        assert o["queue_totals"]["messages"] >= messages_before + 3, o["queue_totals"]
        assert o["object_totals"]["connections"] >= 1 and o["object_totals"]["channels"] >= 1
        return o

    eventually(grown, conns=[c])


# --------------------------------------------------------------------------- vhosts


def test_vhost_lifecycle(api):
    v = uniq("v")
    try:
        assert api.put(f"/api/vhosts/{q(v)}").status == 201
        assert api.put(f"/api/vhosts/{q(v)}").status == 204
        assert v in [x["name"] for x in api.json("/api/vhosts")]
        one = api.json(f"/api/vhosts/{q(v)}")
        assert one["name"] == v and one["tracing"] is False and one["description"] == ""
        assert api.delete(f"/api/vhosts/{q(v)}").status == 204
        assert api.get(f"/api/vhosts/{q(v)}").status == 404
        assert api.delete(f"/api/vhosts/{q(v)}").status == 404
        assert v not in [x["name"] for x in api.json("/api/vhosts")]
    finally:
        api.delete(f"/api/vhosts/{q(v)}")


def test_vhost_description_and_tags(api, reg):
    v = uniq("v")
    reg.vhosts.append(v)
    assert api.put(f"/api/vhosts/{q(v)}", {"description": "for tests", "tags": "a,b"}).status == 201
    one = api.json(f"/api/vhosts/{q(v)}")
    assert one["description"] == "for tests"
    assert one["metadata"]["description"] == "for tests"
    assert one["tags"] == ["a", "b"]
    assert one["metadata"]["tags"] == ["a", "b"]


def test_vhost_creator_gets_full_permissions(api, reg, amqp):
    """RabbitMQ grants the user who creates a vhost through the API .* .* .* there."""
    v = reg.vhost(grant_guest=False)
    perms = api.json(f"/api/vhosts/{q(v)}/permissions")
    assert [(p["user"], p["configure"], p["write"], p["read"]) for p in perms] == [("guest", ".*", ".*", ".*")]
    assert amqp(v).is_open


def test_connection_to_missing_vhost_is_refused(amqp):
    v = uniq("missing")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp(v)
    assert f"(530) 'NOT_ALLOWED - vhost {v} not found'" in refusal(info.value)


def test_deleting_a_vhost_closes_its_connections(api, reg, amqp):
    v = reg.vhost()
    c = amqp(v)
    c.channel().queue_declare("q-in-vhost")
    assert api.delete(f"/api/vhosts/{q(v)}").status == 204
    e = wait_closed(c)
    assert e.reply_code == 320
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(v)
    # RabbitMQ says "is deleted", or "is down" when the vhost's processes stop first
    assert e.reply_text in (f"CONNECTION_FORCED - vhost '{v}' is deleted", f"CONNECTION_FORCED - vhost '{v}' is down")


# --------------------------------------------------------------------------- users


def test_user_lifecycle_and_amqp_login(api, amqp):
    u = uniq("u")
    try:
        assert api.put(f"/api/users/{q(u)}", {"password": "s3cret", "tags": "management,monitoring"}).status == 201
        assert api.put(f"/api/users/{q(u)}", {"password": "s3cret", "tags": "management,monitoring"}).status == 204
        one = api.json(f"/api/users/{q(u)}")
        assert one["name"] == u
        assert one["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert sorted(one["tags"]) == ["management", "monitoring"]
        assert check_rabbit_hash(one["password_hash"], "s3cret"), one["password_hash"]
        assert u in [x["name"] for x in api.json("/api/users")]

        assert api.put(f"/api/permissions/%2F/{q(u)}", ALL).status == 201
        assert amqp(user=u, password="s3cret").is_open
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
            amqp(user=u, password="wrong")
        assert f"(403) '{LOGIN_REFUSED}" in refusal(info.value)

        assert api.delete(f"/api/users/{q(u)}").status == 204
        assert api.get(f"/api/users/{q(u)}").status == 404
        assert api.delete(f"/api/users/{q(u)}").status == 404
        assert api.get(f"/api/permissions/%2F/{q(u)}").status == 404  # its permissions went too
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
            amqp(user=u, password="s3cret")
        assert LOGIN_REFUSED in refusal(info.value)
    finally:
        api.delete(f"/api/users/{q(u)}")


def test_tags_as_a_list(api, reg):
    u = uniq("u")
    reg.users.append(u)
    assert api.put(f"/api/users/{q(u)}", {"password": "p", "tags": ["management", "policymaker"]}).status == 201
    assert sorted(api.json(f"/api/users/{q(u)}")["tags"]) == ["management", "policymaker"]


def test_password_hash_import(api, reg, amqp):
    u = uniq("u")
    reg.users.append(u)
    h = rabbit_hash("imported-pw", salt=b"\x01\x02\x03\x04")
    r = api.put(f"/api/users/{q(u)}", {"password_hash": h, "hashing_algorithm": "rabbit_password_hashing_sha256",
                                       "tags": "management"})
    assert r.status == 201, r
    one = api.json(f"/api/users/{q(u)}")
    assert one["password_hash"] == h and one["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    api.ok("PUT", f"/api/permissions/%2F/{q(u)}", ALL)
    assert amqp(user=u, password="imported-pw").is_open
    assert api.as_user(u, "imported-pw").json("/api/whoami")["name"] == u
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(user=u, password="imported-pw-not")


def test_password_change_takes_effect(api, reg, amqp):
    u = reg.user(password="old", perms=ALL)
    assert amqp(user=u, password="old").is_open
    assert api.put(f"/api/users/{q(u)}", {"password": "new", "tags": ""}).status == 204
    assert amqp(user=u, password="new").is_open
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(user=u, password="old")


@pytest.mark.parametrize("body,reason", [
    ({"password": "p"}, "tags_not_present"),
    ({"password": "p", "password_hash": rabbit_hash("p"), "tags": ""}, "both_password_and_password_hash_are_provided"),
    ({"password_hash": "not base64!!", "tags": ""}, None),
], ids=["no-tags", "password-and-hash", "hash-not-base64"])
def test_user_put_validation(api, reg, body, reason):
    u = uniq("u")
    reg.users.append(u)
    r = api.put(f"/api/users/{q(u)}", body)
    assert r.status == 400, r
    if reason:
        assert r.reason() == reason
    assert api.get(f"/api/users/{q(u)}").status == 404


def test_deleting_a_user_closes_its_connections(api, reg, amqp):
    u = reg.user(perms=ALL)
    c = amqp(user=u, password="pw")
    assert api.delete(f"/api/users/{q(u)}").status == 204
    e = wait_closed(c)
    assert e.reply_code == 320
    assert e.reply_text == f"CONNECTION_FORCED - user '{u}' is deleted"


# --------------------------------------------------------------------------- permissions


def test_permission_lifecycle(api, reg):
    v = reg.vhost()
    u = reg.user()
    path = f"/api/permissions/{q(v)}/{q(u)}"
    assert api.get(path).status == 404
    assert api.put(path, {"configure": "^c", "write": "^w", "read": "^r"}).status == 201
    assert api.put(path, {"configure": "^c", "write": "^w", "read": "^r2"}).status == 204
    expected = {"user": u, "vhost": v, "configure": "^c", "write": "^w", "read": "^r2"}
    assert api.json(path) == expected
    assert expected in api.json("/api/permissions")
    assert api.json(f"/api/users/{q(u)}/permissions") == [expected]
    assert expected in api.json(f"/api/vhosts/{q(v)}/permissions")
    assert api.delete(path).status == 204
    assert api.get(path).status == 404
    assert api.json(f"/api/users/{q(u)}/permissions") == []


def test_permission_put_with_missing_keys_is_400_and_changes_nothing(api, reg):
    u = reg.user(perms={"configure": "^c", "write": "^w", "read": "^r"})
    path = f"/api/permissions/%2F/{q(u)}"
    r = api.put(path, {"configure": ".*"})
    assert r.status == 400, r
    assert api.json(path) == {"user": u, "vhost": "/", "configure": "^c", "write": "^w", "read": "^r"}


def test_permission_put_invalid_regex_or_unknown_names_is_400(api, reg):
    u = reg.user()
    r = api.put(f"/api/permissions/%2F/{q(u)}", {"configure": "(", "write": ".*", "read": ".*"})
    assert r.status == 400, r
    assert api.get(f"/api/permissions/%2F/{q(u)}").status == 404
    r = api.put(f"/api/permissions/%2F/{q(uniq('nobody'))}", ALL)
    assert r.status == 400 and r.reason() == "vhost_or_user_not_found", r
    r = api.put(f"/api/permissions/{q(uniq('nowhere'))}/{q(u)}", ALL)
    assert r.status == 400 and r.reason() == "vhost_or_user_not_found", r


def test_user_without_permissions_is_refused_at_connection_open(api, reg, amqp):
    v = reg.vhost()
    u = reg.user()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp(v, u, "pw")
    assert f"(530) \"NOT_ALLOWED - access to vhost '{v}' refused for user '{u}'\"" in refusal(info.value)
    # a permission in another vhost does not help; one in this vhost does
    api.ok("PUT", f"/api/permissions/%2F/{q(u)}", ALL)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        amqp(v, u, "pw")
    api.ok("PUT", f"/api/permissions/{q(v)}/{q(u)}", {"configure": "", "write": "", "read": ""})
    assert amqp(v, u, "pw").is_open


def test_permission_change_applies_to_open_connections(api, reg, amqp):
    v = reg.vhost()
    u = reg.user(perms=ALL, vhost=v)
    c = amqp(v, u, "pw")
    c.channel().queue_declare("before")
    api.ok("PUT", f"/api/permissions/{q(v)}/{q(u)}", {"configure": "^nothing$", "write": ".*", "read": ".*"})
    code, text = channel_error(c, lambda ch: ch.queue_declare("after"))
    assert (code, text) == (403, f"ACCESS_REFUSED - access to queue 'after' in vhost '{v}' refused for user '{u}'")
    # removing the permission does not close the connection
    api.ok("DELETE", f"/api/permissions/{q(v)}/{q(u)}")
    c.process_data_events(time_limit=0.3)
    assert c.is_open


# --------------------------------------------------------------------------- vhost limits


def limits(api, vhost):
    """The limits of a vhost as one dict."""
    out = {}
    for row in api.json(f"/api/vhost-limits/{q(vhost)}"):
        assert row["vhost"] == vhost
        out.update(row["value"])
    return out


def test_vhost_without_limits_has_no_limit_rows(api, reg):
    v = reg.vhost()
    assert api.json(f"/api/vhost-limits/{q(v)}") == []
    assert v not in [row["vhost"] for row in api.json("/api/vhost-limits")]
    api.ok("PUT", f"/api/vhost-limits/{q(v)}/max-queues", {"value": 3})
    api.ok("DELETE", f"/api/vhost-limits/{q(v)}/max-queues")
    assert api.json(f"/api/vhost-limits/{q(v)}") == []


def test_max_connections_limit(api, reg, amqp):
    v = reg.vhost()
    path = f"/api/vhost-limits/{q(v)}/max-connections"
    assert api.put(path, {"value": 1}).status == 204
    assert api.put(path, {"value": 1}).status == 204
    assert api.json(f"/api/vhost-limits/{q(v)}") == [{"vhost": v, "value": {"max-connections": 1}}]
    assert {"vhost": v, "value": {"max-connections": 1}} in api.json("/api/vhost-limits")
    first = amqp(v)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp(v)
    assert (f"(530) \"NOT_ALLOWED - access to vhost '{v}' refused for user 'guest': connection limit (1) is reached\""
            in refusal(info.value))
    assert first.is_open
    assert amqp().is_open  # other vhosts are not limited
    assert api.delete(path).status == 204
    assert limits(api, v) == {}
    assert amqp(v).is_open
    # 0 refuses every connection
    assert api.put(path, {"value": 0}).status == 204
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp(v)
    assert "connection limit (0) is reached" in refusal(info.value)
    # a negative value means no limit
    assert api.put(path, {"value": -1}).status == 204
    assert amqp(v).is_open


def test_max_queues_limit(api, reg, amqp):
    v = reg.vhost()
    path = f"/api/vhost-limits/{q(v)}/max-queues"
    assert api.put(path, {"value": 1}).status == 204
    c = amqp(v)
    ch = c.channel()
    ch.queue_declare("q1")
    ch.queue_declare("q1")  # redeclaring an existing queue is fine
    code, text = channel_error(c, lambda ch: ch.queue_declare("q2"))
    assert (code, text) == (406, f"PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '{v}' (1) is reached")
    r = api.put(f"/api/queues/{q(v)}/q3", {})
    assert r.status == 400
    assert r.reason() == f"cannot declare queue 'q3': queue limit in vhost '{v}' (1) is reached"
    assert api.delete(path).status == 204
    c.channel().queue_declare("q2")


def test_vhost_limit_validation(api, reg):
    v = reg.vhost()
    assert api.put(f"/api/vhost-limits/{q(v)}/max-queues", {"value": "x"}).status == 400
    assert api.put(f"/api/vhost-limits/{q(v)}/bogus", {"value": 1}).status == 400
    assert api.put(f"/api/vhost-limits/{q(v)}/max-queues", {}).status == 400
    assert limits(api, v) == {}
    assert api.put(f"/api/vhost-limits/{q(uniq('nowhere'))}/max-queues", {"value": 1}).status == 404


# --------------------------------------------------------------------------- queues


def test_queue_put_then_inequivalent_put(api, reg):
    name = reg.queue()
    path = f"/api/queues/%2F/{q(name)}"
    body = {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 10}}
    assert api.put(path, body).status == 201
    assert api.put(path, body).status == 204
    r = api.put(path, {**body, "durable": False})
    assert r.status == 400
    assert r.reason() == (f"inequivalent arg 'durable' for queue '{name}' in vhost '/': "
                          "received 'false' but current is 'true'")
    r = api.put(path, {**body, "arguments": {"x-max-length": 11}})
    assert r.status == 400
    assert r.reason() == (f"inequivalent arg 'x-max-length' for queue '{name}' in vhost '/': "
                          "received '11' but current is '10'")


def test_queue_put_defaults(api, reg):
    """Keys left out of the body: RabbitMQ declares a non-durable, non-auto-delete queue."""
    name = reg.queue(body={})
    one = api.json(f"/api/queues/%2F/{q(name)}")
    assert (one["durable"], one["auto_delete"], one["exclusive"], one["arguments"]) == (False, False, False, {})


def test_queue_put_invalid_argument_is_400(api, reg):
    name = reg.queue()
    r = api.put(f"/api/queues/%2F/{q(name)}", {"durable": False, "arguments": {"x-max-length": "abc"}})
    assert r.status == 400
    assert r.reason().startswith(f"invalid arg 'x-max-length' for queue '{name}' in vhost '/'")
    assert api.get(f"/api/queues/%2F/{q(name)}").status == 404


def test_queue_put_in_missing_vhost_is_404(api):
    assert api.put(f"/api/queues/{q(uniq('nowhere'))}/x", {}).status == 404


def test_queue_with_reserved_name_is_refused(api, reg):
    name = "amq." + uniq("q")
    reg.queues.append(("/", name))
    r = api.put(f"/api/queues/%2F/{q(name)}", {"durable": False})
    assert r.status == 401, r  # RabbitMQ: {"error":"not_authorised","reason":"Access refused."}
    assert api.get(f"/api/queues/%2F/{q(name)}").status == 404


def test_queue_details_and_counts(api, reg, amqp):
    name = reg.queue(body={"durable": True, "arguments": {"x-max-length": 10}})
    path = f"/api/queues/%2F/{q(name)}"
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", name, b"m%d" % i)
    consumer = c.channel()
    consumer.basic_qos(prefetch_count=1)
    consumer.basic_consume(name, lambda *a: None)  # takes one message and does not ack it

    def counts():
        d = api.json(path)
        assert (d.get("messages"), d.get("messages_ready"), d.get("messages_unacknowledged"),
                d.get("consumers")) == (3, 2, 1, 1), d
        return d

    d = eventually(counts, conns=[c])
    assert d["name"] == name and d["vhost"] == "/"
    assert d["durable"] is True and d["auto_delete"] is False and d["exclusive"] is False
    assert d["arguments"] == {"x-max-length": 10}
    assert d["state"] == "running"
    assert d["type"] == "classic"
    assert name in [x["name"] for x in api.json("/api/queues/%2F")]
    assert name in [x["name"] for x in api.json("/api/queues")]



def test_queue_get_requeue_and_remove(api, reg, amqp):
    name = reg.queue(body={"durable": False})
    path = f"/api/queues/%2F/{q(name)}"
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    for body in (b"first", b"second"):
        ch.basic_publish("", name, body, pika.BasicProperties(content_type="text/plain", headers={"h": 1}))
    r = api.post(path + "/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert r.status == 200, r
    [m] = r.json()
    assert m["payload"] == "first" and m["payload_encoding"] == "string"
    assert m["redelivered"] is False and m["exchange"] == "" and m["routing_key"] == name
    assert m["message_count"] == 1 and m["payload_bytes"] == 5
    assert m["properties"]["content_type"] == "text/plain" and m["properties"]["headers"] == {"h": 1}
    # still there, now redelivered
    got = api.post(path + "/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"}).json()
    assert [(x["payload"], x["redelivered"]) for x in got] == [("first", True), ("second", False)]
    # ack_requeue_false removes it
    got = api.post(path + "/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "base64"}).json()
    assert [(x["payload"], x["payload_encoding"]) for x in got] == [(base64.b64encode(b"first").decode(), "base64")]
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert body == b"second" and method.redelivered is True
    assert ch.basic_get(name, auto_ack=True)[0] is None
    assert api.post(path + "/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).json() == []


def test_queue_purge_if_empty_and_delete(api, reg, amqp):
    name = reg.queue(body={"durable": False})
    path = f"/api/queues/%2F/{q(name)}"
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    for _ in range(4):
        ch.basic_publish("", name, b"x")
    assert ch.queue_declare(name, passive=True).method.message_count == 4
    r = api.delete(path + "?if-empty=true")
    assert r.status == 400
    assert r.reason() == f"queue '{name}' in vhost '/' not empty"
    assert ch.queue_declare(name, passive=True).method.message_count == 4
    assert api.delete(path + "/contents").status == 204
    assert ch.queue_declare(name, passive=True).method.message_count == 0
    assert api.delete(path + "?if-empty=true").status == 204
    assert api.get(path).status == 404
    assert api.delete(path).status == 404
    assert api.delete(path + "/contents").status == 404
    assert api.post(path + "/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}).status == 404


def test_queue_delete_if_unused(api, reg, amqp):
    name = reg.queue(body={"durable": False})
    path = f"/api/queues/%2F/{q(name)}"
    c = amqp()
    ch = c.channel()
    tag = ch.basic_consume(name, lambda *a: None)
    r = api.delete(path + "?if-unused=true")
    assert r.status == 400, r
    ch.basic_cancel(tag)
    assert api.delete(path + "?if-unused=true").status == 204
    assert api.get(path).status == 404


def test_queue_bindings_endpoint(api, reg):
    name = reg.queue(body={"durable": False})
    x = reg.exchange(body={"type": "direct", "durable": False})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}", {"routing_key": "rk", "arguments": {}})
    rows = api.json(f"/api/queues/%2F/{q(name)}/bindings")
    assert [(b["source"], b["routing_key"]) for b in rows] == [("", name), (x, "rk")]


# --------------------------------------------------------------------------- exchanges


DEFAULT_EXCHANGES = {"": "direct", "amq.direct": "direct", "amq.fanout": "fanout", "amq.headers": "headers",
                     "amq.match": "headers", "amq.topic": "topic"}


def test_exchange_lifecycle(api, reg):
    x = reg.exchange()
    path = f"/api/exchanges/%2F/{q(x)}"
    body = {"type": "topic", "durable": True, "auto_delete": False, "internal": False,
            "arguments": {"alternate-exchange": "ae"}}
    assert api.put(path, body).status == 201
    assert api.put(path, body).status == 204
    r = api.put(path, {**body, "type": "direct"})
    assert r.status == 400
    assert r.reason() == (f"inequivalent arg 'type' for exchange '{x}' in vhost '/': "
                          "received 'direct' but current is 'topic'")
    one = api.json(path)
    assert {k: one[k] for k in ("name", "vhost", "type", "durable", "auto_delete", "internal", "arguments")} == {
        "name": x, "vhost": "/", "type": "topic", "durable": True, "auto_delete": False, "internal": False,
        "arguments": {"alternate-exchange": "ae"}}
    listed = {e["name"]: e["type"] for e in api.json("/api/exchanges/%2F")}
    assert listed[x] == "topic"
    for name, typ in DEFAULT_EXCHANGES.items():
        assert listed.get(name) == typ, name
    assert x in [e["name"] for e in api.json("/api/exchanges")]
    assert api.delete(path).status == 204
    assert api.get(path).status == 404
    assert api.delete(path).status == 404


def test_exchange_put_defaults(api, reg):
    x = reg.exchange(body={})
    one = api.json(f"/api/exchanges/%2F/{q(x)}")
    assert (one["type"], one["durable"], one["auto_delete"], one["internal"], one["arguments"]) == (
        "direct", False, False, False, {})


def test_exchange_unknown_type_is_400(api, reg):
    x = reg.exchange()
    r = api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "nosuchtype"})
    assert r.status == 400
    assert r.reason() == "unknown exchange type 'nosuchtype'"
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 404


def test_reserved_exchange_names_are_refused(api, reg):
    x = "amq." + uniq("x")
    reg.exchanges.append(("/", x))
    r = api.put(f"/api/exchanges/%2F/{q(x)}", {"type": "direct"})
    assert r.status == 401, r  # RabbitMQ: {"error":"not_authorised","reason":"Access refused."}
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 404
    r = api.delete("/api/exchanges/%2F/amq.direct")
    assert r.status == 401, r
    assert api.get("/api/exchanges/%2F/amq.direct").status == 200


def test_exchange_publish(api, reg, amqp):
    x = reg.exchange(body={"type": "direct", "durable": False})
    name = reg.queue(body={"durable": False})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}", {"routing_key": "rk", "arguments": {}})
    pub = f"/api/exchanges/%2F/{q(x)}/publish"
    r = api.post(pub, {"routing_key": "rk", "payload": "hello", "payload_encoding": "string",
                       "properties": {"content_type": "text/plain", "delivery_mode": 2, "headers": {"h": "v"},
                                      "correlation_id": "c1"}})
    assert r.status == 200 and r.json() == {"routed": True}
    assert api.post(pub, {"routing_key": "nowhere", "payload": "x", "payload_encoding": "string",
                          "properties": {}}).json() == {"routed": False}
    r = api.post(pub, {"routing_key": "rk", "payload": base64.b64encode(b"\x00\x01bin").decode(),
                       "payload_encoding": "base64", "properties": {}})
    assert r.json() == {"routed": True}
    ch = amqp().channel()
    method, props, body = ch.basic_get(name, auto_ack=True)
    assert body == b"hello" and method.exchange == x and method.routing_key == "rk"
    assert props.content_type == "text/plain" and props.delivery_mode == 2
    assert props.headers == {"h": "v"} and props.correlation_id == "c1"
    assert ch.basic_get(name, auto_ack=True)[2] == b"\x00\x01bin"


def test_publish_with_bad_payload_encoding_is_400(api, reg):
    x = reg.exchange(body={"type": "fanout", "durable": False})
    pub = f"/api/exchanges/%2F/{q(x)}/publish"
    r = api.post(pub, {"routing_key": "", "payload": "!!", "payload_encoding": "base64", "properties": {}})
    assert r.status == 400, r
    r = api.post(pub, {"routing_key": "", "payload": "hi", "payload_encoding": "bogus", "properties": {}})
    assert r.status == 400, r


def test_default_exchange_is_amq_default(api, reg, amqp):
    """The default exchange is addressed as amq.default in paths (rabbitmqadmin publishes
    there when no exchange is given)."""
    name = reg.queue(body={"durable": False})
    one = api.get("/api/exchanges/%2F/amq.default")
    assert one.status == 200, one
    assert one.json()["name"] == "" and one.json()["type"] == "direct"
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": name, "payload": "via default", "payload_encoding": "string", "properties": {}})
    assert r.status == 200 and r.json() == {"routed": True}, r
    assert amqp().channel().basic_get(name, auto_ack=True)[2] == b"via default"


def test_exchange_bindings_source_and_destination(api, reg):
    x = reg.exchange(body={"type": "direct", "durable": False})
    y = reg.exchange(body={"type": "fanout", "durable": False})
    name = reg.queue(body={"durable": False})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}", {"routing_key": "k1"})
    api.ok("POST", f"/api/bindings/%2F/e/{q(x)}/e/{q(y)}", {"routing_key": "k2"})
    src = api.get(f"/api/exchanges/%2F/{q(x)}/bindings/source")
    assert src.status == 200, src
    assert sorted((b["destination"], b["destination_type"], b["routing_key"]) for b in src.json()) == sorted(
        [(name, "queue", "k1"), (y, "exchange", "k2")])
    dst = api.get(f"/api/exchanges/%2F/{q(y)}/bindings/destination")
    assert dst.status == 200, dst
    assert [(b["source"], b["routing_key"]) for b in dst.json()] == [(x, "k2")]


# --------------------------------------------------------------------------- bindings


def test_binding_create_list_delete(api, reg):
    x = reg.exchange(body={"type": "topic", "durable": False})
    name = reg.queue(body={"durable": False})
    path = f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}"
    r = api.post(path, {"routing_key": "a.*", "arguments": {}})
    assert r.status == 201, r
    assert r.headers.get("location")
    assert api.post(path, {"routing_key": "a.*", "arguments": {}}).status == 201  # idempotent
    api.ok("POST", path, {"routing_key": "a.*", "arguments": {"x-tag": 1}})
    rows = api.json(path)
    assert len(rows) == 2
    for b in rows:
        assert (b["source"], b["vhost"], b["destination"], b["destination_type"], b["routing_key"]) == (
            x, "/", name, "queue", "a.*")
        assert isinstance(b["properties_key"], str) and b["properties_key"]
    plain = [b for b in rows if b["arguments"] == {}][0]
    tagged = [b for b in rows if b["arguments"] == {"x-tag": 1}][0]
    assert plain["properties_key"] != tagged["properties_key"]
    assert any(b["source"] == x and b["destination"] == name for b in api.json("/api/bindings/%2F"))
    assert any(b["source"] == x and b["destination"] == name for b in api.json("/api/bindings"))

    assert api.delete(f"{path}/{q(plain['properties_key'])}").status == 204
    assert api.delete(f"{path}/{q(plain['properties_key'])}").status == 404
    assert [b["arguments"] for b in api.json(path)] == [{"x-tag": 1}]
    assert api.delete(f"{path}/{q(tagged['properties_key'])}").status == 204
    assert api.json(path) == []


def test_binding_location_header_names_the_binding(api, reg):
    x = reg.exchange(body={"type": "direct", "durable": False})
    name = reg.queue(body={"durable": False})
    path = f"/api/bindings/%2F/e/{q(x)}/q/{q(name)}"
    for rk in ("rk", "a b/c", ""):
        r = api.post(path, {"routing_key": rk, "arguments": {}})
        assert r.status == 201
        [row] = [b for b in api.json(path) if b["routing_key"] == rk]
        location = urllib.parse.urljoin(r.url, r.headers["location"])
        assert location == f"{api.base}{path}/{q(row['properties_key'])}", (rk, r.headers["location"])
        one = api.get(location[len(api.base):])
        assert one.status == 200, one
        assert one.json()["routing_key"] == rk
        assert api.delete(location[len(api.base):]).status == 204
    assert api.json(path) == []


def test_exchange_to_exchange_binding(api, reg, amqp):
    x = reg.exchange(body={"type": "direct", "durable": False})
    y = reg.exchange(body={"type": "fanout", "durable": False})
    name = reg.queue(body={"durable": False})
    api.ok("POST", f"/api/bindings/%2F/e/{q(y)}/q/{q(name)}", {"routing_key": ""})
    path = f"/api/bindings/%2F/e/{q(x)}/e/{q(y)}"
    r = api.post(path, {"routing_key": "k", "arguments": {}})
    assert r.status == 201 and r.headers.get("location")
    [row] = api.json(path)
    assert (row["source"], row["destination"], row["destination_type"], row["routing_key"]) == (x, y, "exchange", "k")
    pub = f"/api/exchanges/%2F/{q(x)}/publish"
    assert api.post(pub, {"routing_key": "k", "payload": "e2e", "payload_encoding": "string",
                          "properties": {}}).json() == {"routed": True}
    assert amqp().channel().basic_get(name, auto_ack=True)[2] == b"e2e"
    assert api.delete(f"{path}/{q(row['properties_key'])}").status == 204
    assert api.json(path) == []
    assert api.post(pub, {"routing_key": "k", "payload": "e2e", "payload_encoding": "string",
                          "properties": {}}).json() == {"routed": False}


def test_binding_to_missing_objects_is_404(api, reg):
    x = reg.exchange(body={"type": "direct", "durable": False})
    name = reg.queue(body={"durable": False})
    assert api.post(f"/api/bindings/%2F/e/{q(uniq('nox'))}/q/{q(name)}", {"routing_key": "k"}).status == 404
    assert api.post(f"/api/bindings/%2F/e/{q(x)}/q/{q(uniq('noq'))}", {"routing_key": "k"}).status == 404
    assert api.post(f"/api/bindings/%2F/e/{q(x)}/e/{q(uniq('nox'))}", {"routing_key": "k"}).status == 404


# --------------------------------------------------------------------------- connections, channels, consumers


def named_connection(port, name):
    params = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
                                       connection_attempts=1, socket_timeout=5,
                                       client_properties={"connection_name": name})
    return pika.BlockingConnection(params)


def wait_listed(api, conns_by_name):
    """Waits until /api/connections lists every connection (by connection_name); returns the rows."""

    def listed():
        rows = {x.get("client_properties", {}).get("connection_name"): x for x in api.json("/api/connections")}
        missing = [n for n in conns_by_name if n not in rows]
        assert not missing, missing
        return {n: rows[n] for n in conns_by_name}

    return eventually(listed, conns=list(conns_by_name.values()))


@pytest.fixture(scope="module")
def busy(http_url, broker):
    """A named pika connection with a channel (prefetch 7) consuming from an exclusive queue,
    once the API lists it (RabbitMQ takes a few seconds; shared by the read-only tests).
    Yields (connection, its API row, the queue, the consumer tag)."""
    api = Api(http_url)
    cname = uniq("conn")
    c = named_connection(broker, cname)
    ch = c.channel()
    ch.basic_qos(prefetch_count=7)
    queue = ch.queue_declare("", exclusive=True).method.queue
    tag = ch.basic_consume(queue, lambda *a: None, consumer_tag=uniq("ctag"))
    row = wait_listed(api, {cname: c})[cname]
    yield c, row, queue, tag
    if c.is_open:
        c.close()


def test_connection_is_listed(api, busy):
    c, row, _, _ = busy
    assert row["user"] == "guest" and row["vhost"] == "/"
    assert row["peer_host"] == "127.0.0.1" and isinstance(row["peer_port"], int)
    assert row["protocol"] == "AMQP 0-9-1" and row["auth_mechanism"] == "PLAIN"
    assert row["state"] == "running"
    assert row["client_properties"]["product"] == "Pika Python Client Library"
    assert row["client_properties"]["capabilities"]["publisher_confirms"] is True
    assert f"127.0.0.1:{row['peer_port']} -> " in row["name"]
    one = api.json(f"/api/connections/{q(row['name'])}")
    assert one["name"] == row["name"] and one["user"] == "guest"
    assert row["name"] in [x["name"] for x in api.json("/api/vhosts/%2F/connections")]


def test_connection_user_provided_name(busy):
    _, row, _, _ = busy
    assert row["user_provided_name"] == row["client_properties"]["connection_name"]


def test_channel_is_listed(api, busy):
    c, row, _, _ = busy

    def listed():
        rows = [x for x in api.json("/api/channels") if x.get("connection_details", {}).get("name") == row["name"]]
        assert rows and rows[0]["consumer_count"] == 1
        return rows[0]

    ch = eventually(listed, conns=[c])
    assert ch["number"] == 1 and ch["user"] == "guest" and ch["vhost"] == "/"
    assert ch["prefetch_count"] == 7
    assert ch["messages_unacknowledged"] == 0
    assert ch["confirm"] is False and ch["transactional"] is False
    assert ch["name"] == f"{row['name']} (1)"
    assert ch["connection_details"]["peer_host"] == "127.0.0.1"
    assert ch["name"] in [x["name"] for x in api.json("/api/vhosts/%2F/channels")]


def test_channel_detail_endpoints(api, busy):
    c, row, _, _ = busy
    r = api.get(f"/api/channels/{q(row['name'] + ' (1)')}")
    assert r.status == 200, r
    assert r.json()["prefetch_count"] == 7
    r = api.get(f"/api/connections/{q(row['name'])}/channels")
    assert r.status == 200, r
    assert [x["number"] for x in r.json()] == [1]


def test_consumer_is_listed(api, busy):
    c, row, queue, tag = busy

    def listed():
        rows = [x for x in api.json("/api/consumers") if x["consumer_tag"] == tag]
        assert rows
        return rows[0]

    cons = eventually(listed, conns=[c])
    assert cons["queue"] == {"name": queue, "vhost": "/"}
    assert cons["ack_required"] is True and cons["exclusive"] is False
    assert cons["prefetch_count"] == 7 and cons["arguments"] == {}
    assert cons["channel_details"]["connection_name"] == row["name"]
    assert cons["channel_details"]["number"] == 1
    assert tag in [x["consumer_tag"] for x in api.json("/api/consumers/%2F")]


def test_close_connection_via_api(api, broker):
    plain, reasoned = uniq("conn"), uniq("conn")
    conns = {plain: named_connection(broker, plain), reasoned: named_connection(broker, reasoned)}
    try:
        rows = wait_listed(api, conns)
        path = f"/api/connections/{q(rows[plain]['name'])}"
        assert api.delete(path).status == 204
        assert api.delete(f"/api/connections/{q(rows[reasoned]['name'])}",
                          headers={"X-Reason": "maintenance"}).status == 204
        e1 = wait_closed(conns[plain])
        e2 = wait_closed(conns[reasoned])
        assert (e1.reply_code, e2.reply_code) == (320, 320)
        assert api.delete(path).status == 404
        eventually(lambda: api.get(path).status == 404)
        assert e1.reply_text == "CONNECTION_FORCED - Closed via management plugin"
        assert e2.reply_text == "CONNECTION_FORCED - maintenance"
    finally:
        for c in conns.values():
            if c.is_open:
                c.close()


def test_close_missing_connection_is_404(api):
    assert api.delete(f"/api/connections/{q('127.0.0.1:1 -> 127.0.0.1:2')}").status == 404
    assert api.get(f"/api/connections/{q('127.0.0.1:1 -> 127.0.0.1:2')}").status == 404


# --------------------------------------------------------------------------- definitions


def test_definitions_export(api):
    d = api.json("/api/definitions")
    for key in ("rabbit_version", "users", "vhosts", "permissions", "queues", "exchanges", "bindings",
                "policies", "parameters", "global_parameters", "topic_permissions"):
        assert key in d, key
    guest = [u for u in d["users"] if u["name"] == "guest"][0]
    assert guest["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert check_rabbit_hash(guest["password_hash"], "guest")
    assert "/" in [v["name"] for v in d["vhosts"]]
    assert {"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"} in d["permissions"]


def test_definitions_import(api, amqp):
    t = uniq("def")
    v, u, x, name = f"{t}-v", f"{t}-u", f"{t}-x", f"{t}-q"
    defs = {
        "users": [{"name": u, "password_hash": rabbit_hash("imp0rted"),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""}],
        "vhosts": [{"name": v}],
        "permissions": [{"user": u, "vhost": v, "configure": "", "write": f"^{x}$", "read": f"^{name}$"}],
        "exchanges": [{"name": x, "vhost": v, "type": "topic", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "queues": [{"name": name, "vhost": v, "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 5}}],
        "bindings": [{"source": x, "vhost": v, "destination": name, "destination_type": "queue",
                      "routing_key": "a.#", "arguments": {}}],
    }
    try:
        r = api.post("/api/definitions", defs)
        assert r.status == 204, r
        assert api.post("/api/definitions", defs).status == 204  # importing again changes nothing
        assert api.json(f"/api/users/{q(u)}")["tags"] == []
        assert api.json(f"/api/permissions/{q(v)}/{q(u)}")["write"] == f"^{x}$"
        ex = api.json(f"/api/exchanges/{q(v)}/{q(x)}")
        assert (ex["type"], ex["durable"]) == ("topic", True)
        qq = api.json(f"/api/queues/{q(v)}/{q(name)}")
        assert (qq["durable"], qq["arguments"]) == (True, {"x-max-length": 5})
        [b] = api.json(f"/api/bindings/{q(v)}/e/{q(x)}/q/{q(name)}")
        assert b["routing_key"] == "a.#"

        c = amqp(v, u, "imp0rted")
        ch = c.channel()
        ch.confirm_delivery()
        ch.basic_publish(x, "a.b", b"imported", mandatory=True)
        got = []
        ch.basic_consume(name, lambda ch_, m, p, body: got.append(body), auto_ack=True)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            c.process_data_events(time_limit=0.05)
        assert got == [b"imported"]

        vd = api.json(f"/api/definitions/{q(v)}")
        assert [qd["name"] for qd in vd["queues"]] == [name]
        assert [xd["name"] for xd in vd["exchanges"]] == [x]
        assert [(bd["source"], bd["destination"], bd["routing_key"]) for bd in vd["bindings"]] == [(x, name, "a.#")]
    finally:
        api.delete(f"/api/vhosts/{q(v)}")
        api.delete(f"/api/users/{q(u)}")


def test_vhost_definitions_import(api, reg):
    v = reg.vhost()
    name = uniq("q")
    r = api.post(f"/api/definitions/{q(v)}",
                 {"queues": [{"name": name, "durable": True, "auto_delete": False, "arguments": {}}]})
    assert r.status == 204, r
    assert api.json(f"/api/queues/{q(v)}/{q(name)}")["durable"] is True


def test_definitions_import_errors(api):
    assert api.post("/api/definitions", raw=b"{not json").status == 400
    v = uniq("nowhere")
    r = api.post("/api/definitions", {"queues": [{"name": "z", "vhost": v, "durable": True,
                                                  "auto_delete": False, "arguments": {}}]})
    assert r.status == 400, r
    assert api.get(f"/api/vhosts/{q(v)}").status == 404


# --------------------------------------------------------------------------- malformed bodies


@pytest.mark.parametrize("kind", ["vhosts", "users", "queues", "exchanges", "permissions"])
def test_malformed_json_body_is_400_and_creates_nothing(api, reg, kind):
    name = uniq(kind[:2])
    if kind == "vhosts":
        reg.vhosts.append(name)
        path = f"/api/vhosts/{q(name)}"
    elif kind == "users":
        reg.users.append(name)
        path = f"/api/users/{q(name)}"
    elif kind == "permissions":
        name = reg.user()
        path = f"/api/permissions/%2F/{q(name)}"
    else:
        getattr(reg, kind).append(("/", name))
        path = f"/api/{kind}/%2F/{q(name)}"
    r = api.put(path, raw=b"{not json")
    assert r.status == 400, r
    assert api.get(path).status == 404


# --------------------------------------------------------------------------- our broker only


def metric(text, name, **labels):
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == name + want:
            return float(value)
    return None


@pytest.mark.ours_only
def test_prometheus_metrics(api, reg, amqp):
    name = reg.queue(body={"durable": False})
    c = amqp()
    ch = c.channel()
    ch.confirm_delivery()
    for _ in range(5):
        ch.basic_publish("", name, b"x")
    ch.basic_get(name, auto_ack=False)
    r = api.get("/metrics")
    assert r.status == 200
    assert r.headers.get("content-type", "").startswith("text/plain")
    text = r.body.decode()
    assert "# TYPE broker_queue_messages gauge" in text
    assert metric(text, "broker_queue_messages", vhost="/", queue=name) == 5
    assert metric(text, "broker_queue_messages_ready", vhost="/", queue=name) == 4
    assert metric(text, "broker_queue_messages_unacked", vhost="/", queue=name) == 1
    assert metric(text, "broker_connections") >= 1
    assert metric(text, "broker_channels") >= 1
    c.close()
    api.ok("DELETE", f"/api/queues/%2F/{q(name)}")
    assert metric(api.get("/metrics").body.decode(), "broker_queue_messages", vhost="/", queue=name) is None


@pytest.mark.ours_only
def test_request_body_over_the_limit_is_413(own_broker_factory):
    b = own_broker_factory("--http-max-body", "1024")
    a = Api(b.http_url)
    a.ok("PUT", "/api/exchanges/%2F/x", {"type": "direct"})
    a.ok("PUT", "/api/queues/%2F/q", {"durable": False})
    pad = "a" * 4096
    requests = {
        "queue": ("PUT", "/api/queues/%2F/too-big", {"durable": False, "arguments": {"x-pad": pad}}),
        "exchange": ("PUT", "/api/exchanges/%2F/too-big", {"type": "direct", "arguments": {"x-pad": pad}}),
        "vhost": ("PUT", "/api/vhosts/too-big", {"description": pad}),
        "user": ("PUT", "/api/users/too-big", {"password": pad, "tags": ""}),
        "binding": ("POST", "/api/bindings/%2F/e/x/q/q", {"routing_key": "k", "arguments": {"x-pad": pad}}),
        "publish": ("POST", "/api/exchanges/%2F/x/publish",
                    {"routing_key": "q", "payload": pad, "payload_encoding": "string", "properties": {}}),
        "definitions": ("POST", "/api/definitions", {"queues": [], "pad": pad}),
    }
    got = {k: a.call(m, path, body=body).status for k, (m, path, body) in requests.items()}
    created = [p for p in ("/api/queues/%2F/too-big", "/api/exchanges/%2F/too-big", "/api/vhosts/too-big",
                           "/api/users/too-big") if a.get(p).status != 404]
    bindings = a.json("/api/bindings/%2F/e/x/q/q")
    assert got == {k: 413 for k in requests}
    assert created == [] and bindings == []
    assert a.put("/api/queues/%2F/small", {"durable": False}).status == 201  # below the limit: fine


@pytest.mark.ours_only
def test_users_vhosts_permissions_and_limits_survive_restart(own_broker_factory, amqp):
    b = own_broker_factory()
    a = Api(b.http_url)
    v, u, gone = uniq("v"), uniq("u"), uniq("gone")
    a.ok("PUT", f"/api/vhosts/{q(v)}", {"description": "kept"})
    a.ok("PUT", f"/api/users/{q(u)}", {"password": "pw", "tags": "management"})
    a.ok("PUT", f"/api/users/{q(gone)}", {"password": "pw", "tags": ""})
    a.ok("PUT", f"/api/permissions/{q(v)}/{q(u)}", {"configure": "^app-", "write": "^app-", "read": "^app-"})
    a.ok("PUT", f"/api/permissions/{q(v)}/{q(gone)}", ALL)
    a.ok("DELETE", f"/api/users/{q(gone)}")
    a.ok("PUT", f"/api/vhost-limits/{q(v)}/max-queues", {"value": 2})
    user_before = a.json(f"/api/users/{q(u)}")

    b.restart()
    a = Api(b.http_url)
    assert a.json(f"/api/vhosts/{q(v)}")["description"] == "kept"
    assert a.json(f"/api/users/{q(u)}") == user_before
    assert a.get(f"/api/users/{q(gone)}").status == 404
    assert a.json(f"/api/permissions/{q(v)}/{q(u)}") == {
        "user": u, "vhost": v, "configure": "^app-", "write": "^app-", "read": "^app-"}
    assert a.as_user(u, "pw").json("/api/whoami")["name"] == u
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(v, gone, "pw", port=b.port)
    c = amqp(v, u, "pw", port=b.port)
    c.channel().queue_declare("app-q")
    code, text = channel_error(c, lambda ch: ch.queue_declare("other"))
    assert (code, text) == (403, f"ACCESS_REFUSED - access to queue 'other' in vhost '{v}' refused for user '{u}'")
    assert a.json(f"/api/vhost-limits/{q(v)}") == [{"vhost": v, "value": {"max-queues": 2}}]


@pytest.mark.ours_only
def test_persistent_messages_of_every_vhost_survive_restarts(own_broker_factory, amqp):
    # recovery runs vhost by vhost; one vhost's recovery must not take another's stored
    # messages for those of deleted queues
    b = own_broker_factory()
    a = Api(b.http_url)
    v = uniq("v")
    a.ok("PUT", f"/api/vhosts/{q(v)}", {})
    a.ok("PUT", f"/api/permissions/{q(v)}/guest", ALL)
    persistent = pika.BasicProperties(delivery_mode=2)
    for vhost in ("/", v):
        ch = amqp(vhost, port=b.port).channel()
        ch.confirm_delivery()
        ch.queue_declare("kept", durable=True)
        for i in range(3):
            ch.basic_publish("", "kept", f"{vhost}-{i}".encode(), persistent)
    for _ in range(2):
        b.restart()
        for vhost in ("/", v):
            ch = amqp(vhost, port=b.port).channel()
            assert ch.queue_declare("kept", durable=True, passive=True).method.message_count == 3, vhost
    ch = amqp(v, port=b.port).channel()
    got = [ch.basic_get("kept", auto_ack=True)[2] for _ in range(3)]
    assert got == [f"{v}-{i}".encode() for i in range(3)]


@pytest.mark.ours_only
def test_guest_logs_in_from_loopback(amqp):
    c = amqp()
    assert c.is_open
