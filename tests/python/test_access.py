"""Vhost permissions (configure / write / read regexes) enforced on AMQP operations and on
the management API, with RabbitMQ 3.10's reply codes and texts.

RabbitMQ's rules: declaring or deleting a queue or exchange needs configure on it; publishing
needs write on the exchange (the default exchange is 'amq.default'); consuming, basic.get and
purge need read on the queue; queue.bind / unbind need write on the queue and read on the
exchange; exchange.bind needs write on the destination and read on the source. A refusal
closes the channel with 403 ACCESS_REFUSED - access to <kind> '<name>' in vhost '<v>'
refused for user '<u>'. Passive declares need no permission.

Runs against RabbitMQ too: BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673."""
import pika
import pytest

from httpapi import ALL, amqp, api, channel_error, q, reg  # noqa: F401


def denied(kind, name, vhost, user):
    return f"ACCESS_REFUSED - access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'"


class Restricted:
    """A vhost with objects made by guest, and a user with the given permissions there."""

    def __init__(self, api, reg, amqp, perms, queues=(), exchanges=()):
        self.api, self.amqp = api, amqp
        self.v = reg.vhost()
        self.u = reg.user(perms=perms, vhost=self.v)
        self.admin = amqp(self.v)
        ch = self.admin.channel()
        for name in queues:
            ch.queue_declare(name)
        for name, kind in exchanges:
            ch.exchange_declare(name, kind)
        self.admin_ch = ch
        self.conn = amqp(self.v, self.u, "pw")

    def refused(self, action):
        """Runs action on a fresh channel of the user; returns (code, text) of the refusal."""
        return channel_error(self.conn, action)

    def denied(self, kind, name):
        return (403, denied(kind, name, self.v, self.u))

    def count(self, queue):
        return self.admin_ch.queue_declare(queue, passive=True).method.message_count


@pytest.fixture
def restricted(api, reg, amqp):
    def make(perms, queues=(), exchanges=()):
        return Restricted(api, reg, amqp, perms, queues, exchanges)

    return make


APP = {"configure": "^app-", "write": "^app-", "read": "^app-"}


# --------------------------------------------------------------------------- configure


def test_queue_declare_needs_configure(restricted):
    r = restricted(APP, queues=["other"])
    assert r.refused(lambda ch: ch.queue_declare("other")) == r.denied("queue", "other")
    ch = r.conn.channel()
    assert ch.queue_declare("app-q").method.queue == "app-q"
    # a passive declare needs no permission
    assert ch.queue_declare("other", passive=True).method.queue == "other"
    # the refusal closed a channel, not the connection
    assert r.conn.is_open


def test_server_named_queue_needs_configure_on_the_generated_name(restricted):
    r = restricted(APP)
    code, text = r.refused(lambda ch: ch.queue_declare("", exclusive=True))
    assert code == 403
    assert text.startswith("ACCESS_REFUSED - access to queue 'amq.gen-")
    assert text.endswith(f"' in vhost '{r.v}' refused for user '{r.u}'")


def test_exchange_declare_and_delete_need_configure(restricted):
    r = restricted(APP, exchanges=[("x-other", "direct")])
    assert r.refused(lambda ch: ch.exchange_declare("x-new", "direct")) == r.denied("exchange", "x-new")
    assert r.refused(lambda ch: ch.exchange_delete("x-other")) == r.denied("exchange", "x-other")
    ch = r.conn.channel()
    ch.exchange_declare("app-x", "fanout")
    ch.exchange_delete("app-x")
    ch.exchange_declare("x-other", "direct", passive=True)


def test_queue_delete_needs_configure_and_purge_needs_read(restricted):
    r = restricted({"configure": "^c-", "write": ".*", "read": "^r-"}, queues=["c-q", "r-q"])
    assert r.refused(lambda ch: ch.queue_purge("c-q")) == r.denied("queue", "c-q")
    assert r.refused(lambda ch: ch.queue_delete("r-q")) == r.denied("queue", "r-q")
    ch = r.conn.channel()
    ch.queue_purge("r-q")
    ch.queue_delete("c-q")


def test_empty_permissions_allow_the_connection_only(restricted):
    r = restricted({"configure": "", "write": "", "read": ""}, queues=["existing"])
    assert r.refused(lambda ch: ch.queue_declare("mine")) == r.denied("queue", "mine")
    assert r.refused(lambda ch: ch.basic_get("existing")) == r.denied("queue", "existing")
    assert r.conn.channel().queue_declare("existing", passive=True).method.message_count == 0


# --------------------------------------------------------------------------- write


def test_publish_needs_write_on_the_exchange(restricted):
    r = restricted(APP, queues=["app-q"], exchanges=[("x-other", "fanout"), ("app-x", "fanout")])
    r.admin_ch.queue_bind("app-q", "x-other")
    r.admin_ch.queue_bind("app-q", "app-x")
    assert r.refused(lambda ch: ch.basic_publish("x-other", "", b"no")) == r.denied("exchange", "x-other")
    assert r.count("app-q") == 0
    ch = r.conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("app-x", "", b"yes")
    assert r.count("app-q") == 1


def test_default_exchange_needs_write_on_amq_default(restricted):
    r = restricted(APP, queues=["app-q"])
    code_text = r.refused(lambda ch: ch.basic_publish("", "app-q", b"no"))
    assert code_text == r.denied("exchange", "amq.default")
    assert r.count("app-q") == 0


def test_default_exchange_with_write_on_amq_default(restricted):
    r = restricted({"configure": "^app-", "write": r"^(amq\.default|app-.*)$", "read": "^app-"}, queues=["app-q"])
    ch = r.conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("", "app-q", b"via default")
    assert ch.basic_get("app-q", auto_ack=True)[2] == b"via default"


def test_publish_to_a_queue_is_not_checked_against_the_queue_name(restricted):
    """Write is checked on the exchange only: routing to a queue outside the write pattern works."""
    r = restricted({"configure": "^app-", "write": "^app-", "read": ".*"}, queues=["other"])
    r.admin_ch.exchange_declare("app-x", "fanout")
    r.admin_ch.queue_bind("other", "app-x")
    ch = r.conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("app-x", "", b"routed")
    assert r.count("other") == 1


# --------------------------------------------------------------------------- read


def test_consume_and_get_need_read(restricted):
    r = restricted(APP, queues=["other", "app-q"])
    assert r.refused(lambda ch: ch.basic_consume("other", lambda *a: None)) == r.denied("queue", "other")
    assert r.refused(lambda ch: ch.basic_get("other")) == r.denied("queue", "other")
    r.admin_ch.confirm_delivery()
    r.admin_ch.basic_publish("", "app-q", b"for the user")
    ch = r.conn.channel()
    assert ch.basic_get("app-q", auto_ack=True)[2] == b"for the user"
    assert ch.basic_consume("app-q", lambda *a: None)


# --------------------------------------------------------------------------- bindings


def test_queue_bind_needs_write_on_the_queue_and_read_on_the_exchange(restricted):
    r = restricted({"configure": ".*", "write": "^app-q$", "read": "^r-x$"}, queues=["app-q", "other"],
                   exchanges=[("r-x", "direct"), ("app-x", "direct")])
    assert r.refused(lambda ch: ch.queue_bind("app-q", "app-x", "k")) == r.denied("exchange", "app-x")
    assert r.refused(lambda ch: ch.queue_bind("other", "r-x", "k")) == r.denied("queue", "other")
    assert r.refused(lambda ch: ch.queue_bind("app-q", "amq.direct", "k")) == r.denied("exchange", "amq.direct")
    ch = r.conn.channel()
    ch.queue_bind("app-q", "r-x", "k")
    # unbind follows the same rules
    r.admin_ch.queue_bind("other", "r-x", "k")
    assert r.refused(lambda ch: ch.queue_unbind("other", "r-x", "k")) == r.denied("queue", "other")
    ch.queue_unbind("app-q", "r-x", "k")


def test_exchange_bind_needs_write_on_the_destination_and_read_on_the_source(restricted):
    r = restricted({"configure": ".*", "write": "^d-x$", "read": "^s-x$"},
                   exchanges=[("d-x", "fanout"), ("s-x", "fanout"), ("nw-x", "fanout"), ("nr-x", "fanout")])
    assert r.refused(lambda ch: ch.exchange_bind("nw-x", "s-x", "k")) == r.denied("exchange", "nw-x")
    assert r.refused(lambda ch: ch.exchange_bind("d-x", "nr-x", "k")) == r.denied("exchange", "nr-x")
    ch = r.conn.channel()
    ch.exchange_bind("d-x", "s-x", "k")
    ch.exchange_unbind("d-x", "s-x", "k")


# --------------------------------------------------------------------------- scope


def test_permissions_are_per_vhost(api, reg, amqp):
    v1, v2 = reg.vhost(), reg.vhost()
    u = reg.user(perms=ALL, vhost=v1)
    api.ok("PUT", f"/api/permissions/{q(v2)}/{q(u)}", APP)
    amqp(v1, u, "pw").channel().queue_declare("other")
    code, text = channel_error(amqp(v2, u, "pw"), lambda ch: ch.queue_declare("other"))
    assert (code, text) == (403, denied("queue", "other", v2, u))


def test_administrator_tag_does_not_bypass_vhost_permissions(api, reg, amqp):
    v = reg.vhost()
    u = reg.user(tags="administrator", perms=APP, vhost=v)
    code, text = channel_error(amqp(v, u, "pw"), lambda ch: ch.queue_declare("other"))
    assert (code, text) == (403, denied("queue", "other", v, u))


# --------------------------------------------------------------------------- the management API


@pytest.fixture
def http_user(api, reg, amqp):
    """A management user with ^app- permissions in a fresh vhost that holds 'other' and 'x-other'."""
    v = reg.vhost()
    u = reg.user(tags="management", perms=APP, vhost=v)
    api.ok("PUT", f"/api/queues/{q(v)}/other", {"durable": False})
    api.ok("PUT", f"/api/exchanges/{q(v)}/x-other", {"type": "fanout", "durable": False})
    api.ok("PUT", f"/api/exchanges/{q(v)}/app-x", {"type": "fanout", "durable": False})
    api.ok("PUT", f"/api/queues/{q(v)}/app-q", {"durable": False})
    return v, u, api.as_user(u, "pw")


def test_http_user_acts_within_its_permissions(api, http_user):
    v, u, m = http_user
    assert m.put(f"/api/queues/{q(v)}/app-new", {"durable": False}).status == 201
    assert m.put(f"/api/exchanges/{q(v)}/app-xnew", {"type": "direct", "durable": False}).status == 201
    assert m.post(f"/api/bindings/{q(v)}/e/app-x/q/app-q", {"routing_key": ""}).status == 201
    r = m.post(f"/api/exchanges/{q(v)}/app-x/publish",
               {"routing_key": "", "payload": "hi", "payload_encoding": "string", "properties": {}})
    assert r.status == 200 and r.json() == {"routed": True}
    got = m.post(f"/api/queues/{q(v)}/app-q/get", {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert [x["payload"] for x in got.json()] == ["hi"]
    assert m.delete(f"/api/queues/{q(v)}/app-new").status == 204
    # another vhost: refused outright
    r = m.put(f"/api/queues/%2F/{q('app-elsewhere')}", {"durable": False})
    assert r.status == 401, r
    assert api.get(f"/api/queues/%2F/{q('app-elsewhere')}").status == 404


HTTP_REFUSALS = {
    # name: (method, path template, body, RabbitMQ's status)
    "declare queue": ("PUT", "/api/queues/{v}/other-new", {"durable": False}, 401),
    "declare exchange": ("PUT", "/api/exchanges/{v}/x-new", {"type": "direct", "durable": False}, 401),
    "delete queue": ("DELETE", "/api/queues/{v}/other", None, 401),
    "delete exchange": ("DELETE", "/api/exchanges/{v}/x-other", None, 401),
    "purge queue": ("DELETE", "/api/queues/{v}/other/contents", None, 401),
    "get from queue": ("POST", "/api/queues/{v}/other/get",
                       {"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"}, 401),
    "bind, no read on exchange": ("POST", "/api/bindings/{v}/e/x-other/q/app-q", {"routing_key": ""}, 401),
    "bind, no write on queue": ("POST", "/api/bindings/{v}/e/app-x/q/other", {"routing_key": ""}, 401),
    "publish": ("POST", "/api/exchanges/{v}/x-other/publish",
                {"routing_key": "", "payload": "x", "payload_encoding": "string", "properties": {}}, 400),
}


def seed(api, v):
    api.ok("POST", f"/api/bindings/{q(v)}/e/x-other/q/other", {"routing_key": ""})
    api.ok("POST", f"/api/exchanges/{q(v)}/x-other/publish",
           {"routing_key": "", "payload": "kept", "payload_encoding": "string", "properties": {}})


def unchanged(api, v):
    assert api.get(f"/api/queues/{q(v)}/other").status == 200
    assert api.get(f"/api/exchanges/{q(v)}/x-other").status == 200
    assert api.get(f"/api/queues/{q(v)}/other-new").status == 404
    assert api.get(f"/api/exchanges/{q(v)}/x-new").status == 404
    assert api.json(f"/api/bindings/{q(v)}/e/x-other/q/app-q") == []
    assert api.json(f"/api/bindings/{q(v)}/e/app-x/q/other") == []
    got = api.post(f"/api/queues/{q(v)}/other/get", {"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert [x["payload"] for x in got.json()] == ["kept"]


@pytest.mark.parametrize("case", list(HTTP_REFUSALS))
def test_http_operations_outside_the_permissions_are_refused(api, http_user, case):
    v, u, m = http_user
    method, path, body, _ = HTTP_REFUSALS[case]
    seed(api, v)
    r = m.call(method, path.format(v=q(v)), body=body)
    assert r.status >= 400, r
    unchanged(api, v)


def test_http_permission_refusals_use_rabbitmqs_status_codes(api, http_user):
    """RabbitMQ answers 401 not_authorised to operations the permissions refuse (400 to publish)."""
    v, u, m = http_user
    got = {case: m.call(method, path.format(v=q(v)), body=body).status
           for case, (method, path, body, _) in HTTP_REFUSALS.items()}
    assert got == {case: status for case, (_, _, _, status) in HTTP_REFUSALS.items()}
