"""Who may receive dead letters through `amq.dead-letter` (ours: RabbitMQ has no such
exchange, so these tests are ours_only).

A queue without its own x-dead-letter-exchange sends its dead letters to the vhost's
`amq.dead-letter` (topic) with the queue's name as routing key. A binding from it reaches
the dead letters of the queues its key matches, so besides the usual bind permissions
(write on the queue or destination exchange, read on `amq.dead-letter`) it needs read
permission on those queues: a key without wildcards names one queue, which the user must
be allowed to read; a key with a `*` or `#` word may reach any queue, so it needs a read
permission that matches everything (`.*`). Otherwise: 403 ACCESS_REFUSED, channel closed.
"""
import pytest

from conftest import get_n, ready_count
from httpapi import amqp, api, channel_error, reg  # noqa: F401

pytestmark = pytest.mark.ours_only

FULL = {"configure": ".*", "write": ".*", "read": ".*"}
# may read its own queues and amq.dead-letter, not the 'secret' queue
MINE = {"configure": ".*", "write": ".*", "read": r"^(mine-.*|amq\.dead-letter)$"}


class Vhost:
    """A vhost with a queue 'secret' and a queue 'mine-src' (neither with a DLX), made by
    guest, and two users: one reading only its own queues, one reading everything."""

    def __init__(self, reg, amqp):
        self.v = reg.vhost()
        self.admin = amqp(self.v).channel()
        for name in ("secret", "mine-src"):
            self.admin.queue_declare(name)
        self.mine = reg.user("mine", perms=MINE, vhost=self.v)
        self.full = reg.user("full", perms=FULL, vhost=self.v)
        self.mine_conn = amqp(self.v, self.mine, "pw")
        self.full_conn = amqp(self.v, self.full, "pw")

    def dead_letter(self, queue, body):
        """Publishes `body` to `queue`, fetches it and rejects it without requeue."""
        self.admin.basic_publish("", queue, body)
        (m, _, _), = get_n(self.admin, queue, 1, auto_ack=False)
        self.admin.basic_reject(m.delivery_tag, requeue=False)

    def refused_queue(self, queue):
        return (403, f"ACCESS_REFUSED - access to the dead letters of queue '{queue}' in vhost "
                     f"'{self.v}' refused for user '{self.mine}'")

    def refused_any(self, key):
        return (403, f"ACCESS_REFUSED - access to the dead letters of every queue in vhost '{self.v}' "
                     f"refused for user '{self.mine}': binding key '{key}' on 'amq.dead-letter' has "
                     f"wildcards and needs read permission '.*'")


@pytest.fixture
def vh(reg, amqp):
    return Vhost(reg, amqp)


def test_binding_to_the_dead_letters_of_an_unreadable_queue_is_refused(vh):
    def bind(ch):
        ch.queue_declare("mine-dlq")
        ch.queue_bind("mine-dlq", "amq.dead-letter", "secret")

    assert channel_error(vh.mine_conn, bind) == vh.refused_queue("secret")


@pytest.mark.parametrize("key", ["#", "*", "sec.#"])
def test_wildcard_binding_needs_read_on_everything(vh, key):
    def bind(ch):
        ch.queue_declare("mine-dlq")
        ch.queue_bind("mine-dlq", "amq.dead-letter", key)

    assert channel_error(vh.mine_conn, bind) == vh.refused_any(key)


def test_exchange_binding_from_amq_dead_letter_follows_the_same_rule(vh):
    def bind(ch):
        ch.exchange_declare("mine-x", "fanout")
        ch.exchange_bind("mine-x", "amq.dead-letter", "#")

    assert channel_error(vh.mine_conn, bind) == vh.refused_any("#")

    def bind_secret(ch):
        ch.exchange_bind("mine-x", "amq.dead-letter", "secret")

    assert channel_error(vh.mine_conn, bind_secret) == vh.refused_queue("secret")
    ch = vh.mine_conn.channel()
    ch.exchange_bind("mine-x", "amq.dead-letter", "mine-src")


def test_each_user_receives_only_dead_letters_it_could_have_read(vh):
    mine = vh.mine_conn.channel()
    mine.queue_declare("mine-dlq")
    mine.queue_bind("mine-dlq", "amq.dead-letter", "mine-src")
    full = vh.full_conn.channel()
    full.queue_declare("full-dlq")
    full.queue_bind("full-dlq", "amq.dead-letter", "#")

    vh.dead_letter("secret", b"secret letter")
    vh.dead_letter("mine-src", b"my letter")
    got = [(m.routing_key, body) for m, _, body in get_n(full, "full-dlq", 2)]
    assert got == [("secret", b"secret letter"), ("mine-src", b"my letter")]
    # both dead letters were routed by the time the second arrived in full-dlq
    assert [body for _, _, body in get_n(mine, "mine-dlq", 1)] == [b"my letter"]
    assert ready_count(mine, "mine-dlq") == 0


def test_the_http_api_applies_the_same_rule(reg, api):
    v = reg.vhost()
    user = reg.user("mine", tags="management", perms=MINE, vhost=v)
    as_mine = api.as_user(user, "pw")
    for name in ("secret", "mine-src", "mine-dlq"):
        api.ok("PUT", f"/api/queues/{v}/{name}", {}, expect=(201,))
    path = f"/api/bindings/{v}/e/amq.dead-letter/q/mine-dlq"
    r = as_mine.post(path, {"routing_key": "secret"})
    assert r.status == 403, r
    assert r.json()["reason"] == (
        f"access to the dead letters of queue 'secret' in vhost '{v}' "
        f"refused for user '{user}'")
    r = as_mine.post(path, {"routing_key": "#"})
    assert r.status == 403, r
    as_mine.ok("POST", path, {"routing_key": "mine-src"}, expect=(201,))
