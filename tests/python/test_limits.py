"""Per-user limits (`/api/user-limits`, max-connections and max-channels), the node's
connection limit (`--max-connections`) and topic permissions (`/api/topic-permissions`),
with RabbitMQ's answers: a refused connection.open or channel.open closes the connection
with 530 NOT_ALLOWED, a routing key a topic permission refuses closes the channel with 403
ACCESS_REFUSED, with RabbitMQ's texts.

The tests without an own broker run against RabbitMQ too:
BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673."""
import pika
import pytest

from conftest import uniq
from httpapi import ALL, Api, amqp, api, channel_error, q, reg  # noqa: F401


def limits_of(api, user):
    return api.json(f"/api/user-limits/{q(user)}")


def test_user_limits_are_set_listed_and_cleared(api, reg):
    u = reg.user(perms=ALL)
    assert limits_of(api, u) == []
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-connections", {"value": 3}, expect=(204,))
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-channels", {"value": -1}, expect=(204,))
    want = {"user": u, "value": {"max-connections": 3, "max-channels": -1}}
    assert limits_of(api, u) == [want]
    assert want in api.json("/api/user-limits")
    assert api.json(f"/api/users/{q(u)}")["limits"] == want["value"]
    api.ok("DELETE", f"/api/user-limits/{q(u)}/max-channels", expect=(204,))
    # clearing a limit that is not set is fine too
    api.ok("DELETE", f"/api/user-limits/{q(u)}/max-channels", expect=(204,))
    assert limits_of(api, u) == [{"user": u, "value": {"max-connections": 3}}]
    api.ok("DELETE", f"/api/user-limits/{q(u)}/max-connections", expect=(204,))
    assert limits_of(api, u) == []
    assert all(e["user"] != u for e in api.json("/api/user-limits"))


def test_user_limit_requests_that_are_refused(api, reg):
    u = reg.user()
    base = f"/api/user-limits/{q(u)}"
    assert api.put(f"{base}/bogus", {"value": 2}).status == 400
    assert api.put(f"{base}/max-channels", {"value": "x"}).status == 400
    assert api.put(f"{base}/max-channels", {}).status == 400
    missing = uniq("nouser")
    assert api.put(f"/api/user-limits/{q(missing)}/max-channels", {"value": 2}).status == 400
    assert api.get(f"/api/user-limits/{q(missing)}").status == 404
    assert limits_of(api, u) == []
    # only administrators
    v = reg.user(tags="monitoring")
    assert api.as_user(v, "pw").put(f"{base}/max-channels", {"value": 2}).status == 401


def test_user_connection_limit(api, reg, amqp):
    u = reg.user(perms=ALL)
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-connections", {"value": 1})
    first = amqp("/", u, "pw")
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp("/", u, "pw")
    text = str(info.value)
    assert "530" in text
    assert f"NOT_ALLOWED - connection refused for user '{u}': user connection limit (1) is reached" in text
    # other users are not affected, and a closed connection frees its place
    amqp().close()
    first.close()
    amqp("/", u, "pw").close()
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-connections", {"value": 0})
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        amqp("/", u, "pw")
    assert "user connection limit (0) is reached" in str(info.value)
    # a negative limit is no limit
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-connections", {"value": -1})
    amqp("/", u, "pw")
    amqp("/", u, "pw")


def test_user_channel_limit_counts_across_connections(api, reg, amqp):
    u = reg.user(perms=ALL)
    api.ok("PUT", f"/api/user-limits/{q(u)}/max-channels", {"value": 2})
    c1, c2 = amqp("/", u, "pw"), amqp("/", u, "pw")
    ch = c1.channel()
    c2.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
        c2.channel()
    assert info.value.reply_code == 530
    assert info.value.reply_text == (
        f"NOT_ALLOWED - number of channels opened for user '{u}' has reached "
        "the maximum allowed user limit of (2)")
    # the closed connection gave its channel back; a closed channel gives back its own
    c1.channel()
    ch.close()
    c1.channel().queue_declare("", exclusive=True)


@pytest.mark.ours_only
def test_user_limits_survive_a_restart_and_round_trip_in_definitions(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    api.ok("PUT", "/api/users/lim", {"password": "pw", "tags": ""})
    api.ok("PUT", "/api/user-limits/lim/max-channels", {"value": 5})
    b.restart()
    api = Api(b.http_url)
    want = [{"user": "lim", "value": {"max-channels": 5}}]
    assert api.json("/api/user-limits/lim") == want
    defs = api.json("/api/definitions")
    [user] = [x for x in defs["users"] if x["name"] == "lim"]
    assert user["limits"] == {"max-channels": 5}
    fresh = own_broker_factory()
    other = Api(fresh.http_url)
    other.ok("POST", "/api/definitions", defs)
    assert other.json("/api/user-limits") == want
    # deleting the user deletes its limits
    other.ok("DELETE", "/api/users/lim")
    assert other.json("/api/user-limits") == []


def test_node_connection_limit(own_broker_factory):
    b = own_broker_factory("--max-connections", "2")
    params = pika.ConnectionParameters(
        "127.0.0.1", b.port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5)
    c1, c2 = pika.BlockingConnection(params), pika.BlockingConnection(params)
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(params)
    assert "NOT_ALLOWED - connection refused: node connection limit (2) is reached" in str(info.value)
    c1.close()
    pika.BlockingConnection(params).close()
    c2.close()


def test_channel_max_is_offered_and_enforced(own_broker_factory):
    b = own_broker_factory("--channel-max", "2")
    params = pika.ConnectionParameters(
        "127.0.0.1", b.port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5)
    c = pika.BlockingConnection(params)
    assert c._impl.params.channel_max == 2
    c.channel(), c.channel()
    # pika will not number a third channel above the negotiated channel_max
    with pytest.raises(pika.exceptions.NoFreeChannels):
        c.channel()
    c.close()


# --------------------------------------------------------------------------- topic permissions


def test_topic_permissions_are_set_listed_and_deleted(api, reg):
    v = reg.vhost()
    u = reg.user(perms=ALL, vhost=v)
    path = f"/api/topic-permissions/{q(v)}/{q(u)}"
    assert api.get(path).status == 404
    a = {"exchange": "amq.topic", "write": "^a\\.{username}$", "read": "^r\\."}
    b = {"exchange": "tpx", "write": "^w", "read": "^r"}
    api.ok("PUT", path, a, expect=(201,))
    # 201 for the user's first topic permission in the vhost only, as RabbitMQ
    api.ok("PUT", path, b, expect=(204,))
    api.ok("PUT", path, b, expect=(204,))
    want = sorted([{"user": u, "vhost": v, **a}, {"user": u, "vhost": v, **b}], key=lambda e: e["exchange"])
    by_x = lambda lst: sorted(lst, key=lambda e: e["exchange"])  # noqa: E731
    assert by_x(api.json(path)) == want
    assert by_x(api.json(f"/api/users/{q(u)}/topic-permissions")) == want
    assert by_x(api.json(f"/api/vhosts/{q(v)}/topic-permissions")) == want
    assert all(e in api.json("/api/topic-permissions") for e in want)
    r = api.put(path, {"write": "x"})
    assert r.status == 400 and r.reason() == "[{key_missing,exchange},{key_missing,read}]"
    assert api.put(path, {"exchange": "bad", "write": "(", "read": ""}).status == 400
    r = api.put(f"/api/topic-permissions/{q(v)}/{q(uniq('nouser'))}", b)
    assert r.status == 400 and r.reason() == "vhost_or_user_not_found"
    api.ok("DELETE", path, expect=(204,))
    assert api.delete(path).status == 404
    assert api.get(path).status == 404


@pytest.fixture
def topic_user(api, reg, amqp):
    """A vhost with a topic exchange `tx` and a direct one `dx`, and a user with full
    permissions there whose topic permissions on both restrict keys."""
    v = reg.vhost()
    u = reg.user(perms=ALL, vhost=v, tags="management")
    admin = amqp(v).channel()
    admin.exchange_declare("tx", "topic")
    admin.exchange_declare("dx", "direct")
    for x in ("tx", "dx"):
        api.ok("PUT", f"/api/topic-permissions/{q(v)}/{q(u)}",
               {"exchange": x, "write": "^a\\.{username}$", "read": "^r\\."})
    return v, u, amqp(v, u, "pw")


def topic_denied(key, x, v, u):
    return (403, f"ACCESS_REFUSED - access to topic '{key}' in exchange '{x}' in vhost '{v}' refused for user '{u}'")


def test_topic_write_permission_is_checked_on_publish(api, topic_user):
    v, u, conn = topic_user
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("tx", f"a.{u}", b"m")  # {username} expanded
    ch.basic_publish("dx", "anything", b"m")  # not a topic exchange: not checked
    ch.basic_publish("amq.topic", "anything", b"m")  # no topic permission there
    assert channel_error(conn, lambda c: c.basic_publish("tx", "a.other", b"m")) == topic_denied("a.other", "tx", v, u)
    assert channel_error(conn, lambda c: c.basic_publish("tx", "", b"m")) == topic_denied("", "tx", v, u)
    # the management API's publish is checked too
    web = api.as_user(u, "pw")
    body = {"routing_key": "a.other", "payload": "m", "payload_encoding": "string", "properties": {}}
    r = web.post(f"/api/exchanges/{q(v)}/tx/publish", body)
    assert r.status == 400
    assert r.reason() == "403 " + topic_denied("a.other", "tx", v, u)[1]
    assert web.post(f"/api/exchanges/{q(v)}/tx/publish", {**body, "routing_key": f"a.{u}"}).status == 200
    # lifting the permission applies to open channels at once
    api.ok("DELETE", f"/api/topic-permissions/{q(v)}/{q(u)}")
    ch.basic_publish("tx", "a.other", b"m")


def test_topic_read_permission_is_checked_on_bindings(topic_user):
    v, u, conn = topic_user
    ch = conn.channel()
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, "tx", "r.x")
    ch.queue_bind(queue, "dx", "zz")
    assert channel_error(conn, lambda c: c.queue_bind(queue, "tx", "zz")) == topic_denied("zz", "tx", v, u)
    assert channel_error(conn, lambda c: c.queue_unbind(queue, "tx", "zz")) == topic_denied("zz", "tx", v, u)
    assert channel_error(conn, lambda c: c.exchange_bind("dx", "tx", "zz")) == topic_denied("zz", "tx", v, u)
    ch.exchange_bind("dx", "tx", "r.ok")


def test_topic_read_permission_is_checked_on_api_bindings(api, topic_user):
    v, u, conn = topic_user
    web = api.as_user(u, "pw")
    queue = uniq("tq")
    conn.channel().queue_declare(queue, auto_delete=True)
    assert web.post(f"/api/bindings/{q(v)}/e/tx/q/{queue}", {"routing_key": "zz"}).status == 401
    assert web.post(f"/api/bindings/{q(v)}/e/tx/q/{queue}", {"routing_key": "r.1"}).status == 201


@pytest.mark.ours_only
def test_topic_permissions_survive_a_restart_and_round_trip_in_definitions(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    api.ok("PUT", "/api/users/tp", {"password": "pw", "tags": ""})
    perm = {"exchange": "amq.topic", "write": "^w", "read": "^r"}
    api.ok("PUT", "/api/topic-permissions/%2F/tp", perm, expect=(201,))
    b.restart()
    api = Api(b.http_url)
    want = [{"user": "tp", "vhost": "/", **perm}]
    assert api.json("/api/topic-permissions") == want
    defs = api.json("/api/definitions")
    assert defs["topic_permissions"] == want
    fresh = own_broker_factory()
    other = Api(fresh.http_url)
    other.ok("POST", "/api/definitions", defs)
    assert other.json("/api/topic-permissions") == want
    # deleting the user deletes its topic permissions
    other.ok("DELETE", "/api/users/tp")
    assert other.json("/api/topic-permissions") == []
