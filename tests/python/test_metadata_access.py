"""Users, vhosts, permissions, topic permissions, limits and policies through the
metadata group (issue 16, docs/design/cluster.md §2) on one node: every change is a Raft
entry before its answer, so they survive a clean restart and a kill -9 right after the
answers; the defaults (guest, "/") are created once, and a user or vhost deleted stays
deleted across restarts (the defaults are not made again).
"""
import pika
import pytest
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker

from conftest import connect, uniq
from httpapi import Api, q

pytestmark = pytest.mark.ours_only


def kill9_and_start(b):
    """SIGKILL (nothing flushed on the way out), then start again on the same data dir."""
    b.proc.kill()
    b.proc.wait(timeout=10)
    b._launch()


def login(port, user, password, vhost="/"):
    params = pika.ConnectionParameters("127.0.0.1", port, vhost, pika.PlainCredentials(user, password),
                                       connection_attempts=1, socket_timeout=5)
    return pika.BlockingConnection(params)


def make_definitions(api):
    """A vhost with limits and a policy, a user with permissions, a topic permission
    and limits; returns their names."""
    vh, user = uniq("ma-vh"), uniq("ma-user")
    api.ok("PUT", f"/api/vhosts/{q(vh)}")
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "monitoring"})
    api.ok("PUT", f"/api/permissions/{q(vh)}/{user}", {"configure": "^ma-", "write": ".*", "read": ".*"})
    api.ok("PUT", f"/api/topic-permissions/{q(vh)}/{user}", {"exchange": "amq.topic", "write": "^a", "read": ".*"})
    api.ok("PUT", f"/api/vhost-limits/{q(vh)}/max-queues", {"value": 2})
    api.ok("PUT", f"/api/user-limits/{user}/max-channels", {"value": 3})
    api.ok("PUT", f"/api/policies/{q(vh)}/ma-len", {"pattern": "^ma-", "definition": {"max-length": 1},
                                                      "apply-to": "queues"})
    api.ok("PUT", f"/api/operator-policies/{q(vh)}/ma-op", {"pattern": "^ma-", "definition": {"message-ttl": 60000},
                                                             "apply-to": "queues"})
    return vh, user


def check_definitions(port, api, vh, user):
    """What make_definitions made is there, and in force."""
    assert api.json(f"/api/users/{user}")["tags"] == ["monitoring"]
    p = api.json(f"/api/permissions/{q(vh)}/{user}")
    assert (p["configure"], p["write"], p["read"]) == ("^ma-", ".*", ".*")
    assert [t["write"] for t in api.json(f"/api/topic-permissions/{q(vh)}/{user}")] == ["^a"]
    assert api.json(f"/api/vhost-limits/{q(vh)}")[0]["value"] == {"max-queues": 2}
    assert api.json(f"/api/user-limits/{user}")[0]["value"] == {"max-channels": 3}
    assert api.json(f"/api/policies/{q(vh)}/ma-len")["definition"] == {"max-length": 1}
    assert api.json(f"/api/operator-policies/{q(vh)}/ma-op")["definition"] == {"message-ttl": 60000}
    c = login(port, user, "pw", vh)
    try:
        ch = c.channel()
        name = uniq("ma-q")
        ch.queue_declare(name)
        # the policy's max-length 1 holds
        for i in range(3):
            ch.basic_publish("", name, str(i).encode())
        assert ch.queue_declare(name, passive=True).method.message_count == 1
        ch.queue_delete(name)
        # the permission's configure pattern holds
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(uniq("other"))
        assert e.value.reply_code == 403
    finally:
        if c.is_open:
            c.close()


@pytest.fixture
def node(own_broker_factory):
    b = own_broker_factory()
    return b, Api(b.http_url)


def test_access_definitions_survive_a_restart_and_kill9(node):
    b, api = node
    vh, user = make_definitions(api)
    check_definitions(b.port, api, vh, user)
    b.restart()
    check_definitions(b.port, Api(b.http_url), vh, user)
    # changed right before a kill -9: the answers came after the commit
    api = Api(b.http_url)
    api.ok("PUT", f"/api/users/{user}", {"password": "pw2", "tags": "monitoring"})
    api.ok("PUT", f"/api/permissions/{q(vh)}/{user}", {"configure": "^ma-", "write": ".*", "read": ".*"})
    kill9_and_start(b)
    api = Api(b.http_url)
    with pytest.raises(AMQPConnectionError):
        login(b.port, user, "pw", vh)
    login(b.port, user, "pw2", vh).close()


def test_deletions_survive_kill9_and_defaults_are_made_once(node):
    b, api = node
    vh, user = make_definitions(api)
    api.ok("DELETE", f"/api/users/{user}")
    api.ok("DELETE", f"/api/vhosts/{q(vh)}")
    # the defaults themselves: guest is deleted (another administrator first) and stays so
    admin = uniq("ma-admin")
    api.ok("PUT", f"/api/users/{admin}", {"password": "pw", "tags": "administrator"})
    api.ok("PUT", f"/api/permissions/%2F/{admin}", {"configure": ".*", "write": ".*", "read": ".*"})
    api = api.as_user(admin, "pw")
    api.ok("DELETE", "/api/users/guest")
    kill9_and_start(b)
    api = Api(b.http_url, admin, "pw")
    names = {u["name"] for u in api.json("/api/users")}
    assert user not in names and "guest" not in names, names
    assert vh not in {v["name"] for v in api.json("/api/vhosts")}
    assert api.get(f"/api/permissions/{q(vh)}/{user}").status == 404
    assert api.json("/api/policies") == [] or all(p["vhost"] != vh for p in api.json("/api/policies"))
    with pytest.raises(AMQPConnectionError):
        connect(b.port)
    b.restart()
    api = Api(b.http_url, admin, "pw")
    assert "guest" not in {u["name"] for u in api.json("/api/users")}


def test_a_fresh_node_has_the_defaults_once(node):
    b, api = node
    users = api.json("/api/users")
    assert [u["name"] for u in users] == ["guest"]
    assert [v["name"] for v in api.json("/api/vhosts")] == ["/"]
    guest_hash = users[0]["password_hash"]
    b.restart()
    api = Api(b.http_url)
    # the same record: not made again at the restart
    assert [u["password_hash"] for u in api.json("/api/users")] == [guest_hash]
    connect(b.port).close()
