"""Users, vhosts, permissions, limits and policies on a three-node cluster (issue 16,
docs/design/cluster.md §2): a change made through any node's management API is a
metadata group entry, applied on every node before long, so a user created on node 1
logs in on nodes 2 and 3 with its permissions enforced there, a policy set on node 2
applies to a queue on node 3, a deleted user is refused everywhere, a deleted vhost
goes everywhere with its queues, and a vhost limit set on one node holds on another.
"""
import os
import sys

import pika
import pytest
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import eventually  # noqa: E402
from httpapi import Api  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]



def api(node, user="guest", password="guest"):
    return Api(node.http_url, user, password)


def login(node, user, password, vhost="/"):
    params = pika.ConnectionParameters(node.host, node.port, vhost, pika.PlainCredentials(user, password),
                                       connection_attempts=1, socket_timeout=5)
    return pika.BlockingConnection(params)


def refused(node, user, password, vhost="/"):
    """Whether a login is refused (it is closed at once if it got in)."""
    try:
        login(node, user, password, vhost).close()
        return False
    except AMQPConnectionError:
        return True


def test_the_defaults_exist_once(cluster):
    hashes = set()
    for node in cluster.nodes:
        users = api(node).json("/api/users")
        assert [u["name"] for u in users] == ["guest"], users
        hashes.add(users[0]["password_hash"])
        assert [v["name"] for v in api(node).json("/api/vhosts")] == ["/"]
    # one record, made once for the cluster: every node has the same salted hash
    assert len(hashes) == 1, hashes


def test_a_user_made_on_one_node_logs_in_everywhere_with_its_permissions(cluster):
    n0, n1, n2 = cluster.nodes
    api(n0).ok("PUT", "/api/users/ca-alice", {"password": "pw", "tags": ""})
    api(n0).ok("PUT", "/api/permissions/%2F/ca-alice", {"configure": "^ca-", "write": ".*", "read": ".*"})
    for node in (n1, n2):
        c = eventually(lambda: login(node, "ca-alice", "pw"), what=f"alice's login on {node.name}")
        try:
            ch = c.channel()
            ch.queue_declare(f"ca-own-{node.index}", auto_delete=True)
            with pytest.raises(ChannelClosedByBroker) as e:
                ch.queue_declare(f"not-hers-{node.index}")
            assert e.value.reply_code == 403
        finally:
            if c.is_open:
                c.close()
    # a user deleted on node 3 is refused on 1 and 2
    api(n2).ok("DELETE", "/api/users/ca-alice")
    for node in (n0, n1):
        eventually(lambda: refused(node, "ca-alice", "pw"), what=f"alice refused on {node.name}")
        assert api(node).get("/api/users/ca-alice").status == 404


def test_a_policy_set_on_one_node_applies_to_a_queue_on_another(cluster):
    n0, n1, n2 = cluster.nodes
    c = login(n2, "guest", "guest")
    try:
        ch = c.channel()
        ch.queue_declare("ca-pol-q", durable=True)
        api(n1).ok("PUT", "/api/policies/%2F/ca-len", {"pattern": "^ca-pol-", "definition": {"max-length": 2},
                                                        "apply-to": "queues"})
        eventually(lambda: api(n2).json("/api/queues/%2F/ca-pol-q").get("policy") == "ca-len",
                   what="the policy on node 3's queue")
        assert api(n2).json("/api/queues/%2F/ca-pol-q")["effective_policy_definition"] == {"max-length": 2}
        for i in range(5):
            ch.basic_publish("", "ca-pol-q", str(i).encode())
        eventually(lambda: ch.queue_declare("ca-pol-q", passive=True).method.message_count == 2,
                   what="max-length 2 in force")
        api(n0).ok("DELETE", "/api/policies/%2F/ca-len")
        eventually(lambda: api(n2).json("/api/queues/%2F/ca-pol-q").get("policy") in (None, ""),
                   what="the policy gone from node 3's queue")
        ch.queue_delete("ca-pol-q")
    finally:
        c.close()


def test_a_vhost_deleted_on_one_node_goes_everywhere_with_its_queues(cluster):
    n0, n1, n2 = cluster.nodes
    api(n1).ok("PUT", "/api/vhosts/ca-vh")
    api(n1).ok("PUT", "/api/permissions/ca-vh/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    c = eventually(lambda: login(n2, "guest", "guest", "ca-vh"), what="the vhost on node 3")
    c.channel().queue_declare("ca-vh-q", durable=True)
    c.close()
    for node in cluster.nodes:
        eventually(lambda: any(x["name"] == "ca-vh-q" for x in api(node).json("/api/queues/ca-vh")),
                   what=f"the queue on {node.name}")
    api(n0).ok("DELETE", "/api/vhosts/ca-vh")
    for node in cluster.nodes:
        eventually(lambda: all(v["name"] != "ca-vh" for v in api(node).json("/api/vhosts")),
                   what=f"the vhost gone from {node.name}")
        eventually(lambda: all(x["vhost"] != "ca-vh" for x in api(node).json("/api/queues")),
                   what=f"its queue gone from {node.name}")
        eventually(lambda: refused(node, "guest", "guest", "ca-vh"), what=f"no login to it on {node.name}")


def test_a_vhost_limit_set_on_one_node_holds_on_another(cluster):
    n0, n1, n2 = cluster.nodes
    api(n0).ok("PUT", "/api/vhosts/ca-lim")
    api(n0).ok("PUT", "/api/permissions/ca-lim/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    api(n0).ok("PUT", "/api/vhost-limits/ca-lim/max-queues", {"value": 1})
    eventually(lambda: api(n1).json("/api/vhost-limits/ca-lim"), what="the limit on node 2")
    c = eventually(lambda: login(n1, "guest", "guest", "ca-lim"), what="the vhost on node 2")
    try:
        ch = c.channel()
        ch.queue_declare("ca-lim-1")
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare("ca-lim-2")
        assert e.value.reply_code == 406
        assert "queue limit in vhost 'ca-lim' (1) is reached" in e.value.reply_text
    finally:
        if c.is_open:
            c.close()
    api(n2).ok("DELETE", "/api/vhosts/ca-lim")
