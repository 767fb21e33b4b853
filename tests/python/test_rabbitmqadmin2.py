"""RabbitMQ's current CLI, rabbitmqadmin v2 (the `rabbitmqadmin` crate, put at
.tools/rabbitmqadmin2/bin by scripts/fetch-rabbitmqadmin2.sh), works against our
management API for the everyday operator commands: overview, nodes, vhosts, users,
permissions, exchanges, queues, bindings, policies, operator policies, vhost and user
limits, publish and get, purge, definitions export and import, and health checks.

Each command's effect is checked through the HTTP API or AMQP, not through the CLI's own
table output. Skipped only when the binary is missing (set RABBITMQADMIN2 to use another).

Runs against RabbitMQ too: BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673
(except `list nodes`, which needs RabbitMQ 4's `being_drained`)."""
import json
import os
import pathlib
import re
import socket
import subprocess
import urllib.parse

import pytest

from conftest import external_port, uniq
from httpapi import Api, eventually, q

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary():
    for p in (os.environ.get("RABBITMQADMIN2"), ROOT / ".tools" / "rabbitmqadmin2" / "bin" / "rabbitmqadmin"):
        if p and os.access(p, os.X_OK):
            return str(p)
    return None


@pytest.fixture(scope="module")
def admin2(http_url, tmp_path_factory):
    exe = binary()
    if exe is None:
        pytest.skip("rabbitmqadmin v2 not available (scripts/fetch-rabbitmqadmin2.sh installs it)")
    url = urllib.parse.urlparse(http_url)
    home = tmp_path_factory.mktemp("admin2-home")  # no ~/.rabbitmqadmin.conf of the caller's

    def run(*args, vhost="/", check=True):
        cmd = [exe, "--non-interactive", "--host", url.hostname, "--port", str(url.port),
               "--username", "guest", "--password", "guest", "--vhost", vhost, *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "HOME": str(home)})
        if check:
            assert r.returncode == 0, f"rabbitmqadmin {' '.join(args)} exited {r.returncode}: {r.stdout}{r.stderr}"
        return r

    return run


@pytest.fixture
def api(http_url):
    return Api(http_url)


def names(api, path, key="name"):
    return {row[key] for row in api.json(path)}


def rows(out):
    """A key/value table as rabbitmqadmin prints it: {key: value}."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def test_show_overview_and_list_nodes(admin2, api):
    overview = api.json("/api/overview")
    shown = rows(admin2("show", "overview").stdout)
    assert shown["Product name"] == overview["product_name"]
    assert shown["RabbitMQ version"] == overview["rabbitmq_version"]
    assert shown["Queues and streams (total)"] == str(overview["object_totals"]["queues"])
    if external_port() is None:  # RabbitMQ 3.10's node objects lack `being_drained`
        out = admin2("list", "nodes").stdout
        assert overview["node"] in out


def test_vhosts_users_permissions(admin2, api):
    vhost, user = uniq("a2v"), uniq("a2u")
    try:
        admin2("declare", "vhost", "--name", vhost)
        assert vhost in names(api, "/api/vhosts")
        assert vhost in admin2("list", "vhosts").stdout

        admin2("declare", "user", "--name", user, "--password", "pw", "--tags", "monitoring")
        u = api.json(f"/api/users/{q(user)}")
        assert "monitoring" in (u["tags"] if isinstance(u["tags"], list) else u["tags"].split(","))
        assert user in admin2("list", "users").stdout

        admin2("declare", "permissions", "--username", user, "--configure", "^a2-", "--write", ".*",
               "--read", ".*", vhost=vhost)
        p = api.json(f"/api/permissions/{q(vhost)}/{q(user)}")
        assert (p["configure"], p["write"], p["read"]) == ("^a2-", ".*", ".*")
        assert user in admin2("list", "permissions").stdout

        admin2("delete", "permissions", "--username", user, vhost=vhost)
        assert api.get(f"/api/permissions/{q(vhost)}/{q(user)}").status == 404
    finally:
        admin2("delete", "user", "--name", user, check=False)
        admin2("delete", "vhost", "--name", vhost, check=False)
    assert user not in names(api, "/api/users")
    assert vhost not in names(api, "/api/vhosts")


def depth(api, qn, n):
    """Waits until the queue holds n messages (RabbitMQ's figures lag by a few seconds)."""
    eventually(lambda: api.json(f"/api/queues/%2F/{q(qn)}").get("messages") == n)


def test_exchanges_queues_bindings_publish_get_purge(admin2, api):
    x, qn = uniq("a2x"), uniq("a2q")
    try:
        admin2("declare", "exchange", "--name", x, "--type", "topic", "--durable", "true")
        assert api.json(f"/api/exchanges/%2F/{q(x)}")["type"] == "topic"
        assert x in admin2("list", "exchanges").stdout

        admin2("declare", "queue", "--name", qn, "--type", "classic", "--durable", "false")
        assert api.json(f"/api/queues/%2F/{q(qn)}")["durable"] is False
        assert qn in admin2("list", "queues").stdout

        admin2("declare", "binding", "--source", x, "--destination-type", "queue",
               "--destination", qn, "--routing-key", "a2.#")
        bound = api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")
        assert [b["routing_key"] for b in bound] == ["a2.#"]
        assert qn in admin2("list", "bindings").stdout

        for body in ("first", "second"):
            admin2("publish", "message", "--exchange", x, "--routing-key", "a2.k", "--payload", body)
        depth(api, qn, 2)
        out = admin2("get", "messages", "--queue", qn, "--count", "1").stdout
        assert "first" in out
        depth(api, qn, 1)  # ack_requeue_false took it

        admin2("purge", "queue", "--name", qn)
        depth(api, qn, 0)

        admin2("delete", "binding", "--source", x, "--destination-type", "queue",
               "--destination", qn, "--routing-key", "a2.#")
        assert api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}") == []
    finally:
        admin2("delete", "queue", "--name", qn, check=False)
        admin2("delete", "exchange", "--name", x, check=False)
    assert api.get(f"/api/queues/%2F/{q(qn)}").status == 404
    assert api.get(f"/api/exchanges/%2F/{q(x)}").status == 404


def test_policies_and_operator_policies(admin2, api):
    pol, op = uniq("a2p"), uniq("a2op")
    try:
        admin2("declare", "policy", "--name", pol, "--pattern", "^a2pol\\.", "--apply-to", "queues",
               "--priority", "3", "--definition", '{"max-length": 10}')
        p = api.json(f"/api/policies/%2F/{q(pol)}")
        assert (p["pattern"], p["apply-to"], p["priority"], p["definition"]) == (
            "^a2pol\\.", "queues", 3, {"max-length": 10})
        assert pol in admin2("list", "policies").stdout

        admin2("declare", "operator_policy", "--name", op, "--pattern", "^a2op\\.", "--apply-to", "queues",
               "--definition", '{"message-ttl": 60000}')
        p = api.json(f"/api/operator-policies/%2F/{q(op)}")
        assert p["definition"] == {"message-ttl": 60000}
        assert op in admin2("list", "operator_policies").stdout

        admin2("delete", "policy", "--name", pol)
        admin2("delete", "operator_policy", "--name", op)
        assert api.get(f"/api/policies/%2F/{q(pol)}").status == 404
        assert api.get(f"/api/operator-policies/%2F/{q(op)}").status == 404
    finally:
        api.delete(f"/api/policies/%2F/{q(pol)}")
        api.delete(f"/api/operator-policies/%2F/{q(op)}")


def test_vhost_and_user_limits(admin2, api):
    vhost, user = uniq("a2lv"), uniq("a2lu")
    try:
        admin2("declare", "vhost", "--name", vhost)
        admin2("declare", "user", "--name", user, "--password", "pw", "--tags", "")

        admin2("declare", "vhost_limit", "--name", "max-connections", "--value", "7", vhost=vhost)
        assert api.json(f"/api/vhost-limits/{q(vhost)}")[0]["value"] == {"max-connections": 7}
        assert vhost in admin2("list", "vhost_limits", vhost=vhost).stdout
        admin2("delete", "vhost_limit", "--name", "max-connections", vhost=vhost)
        assert api.json(f"/api/vhost-limits/{q(vhost)}") == []

        admin2("declare", "user_limit", "--username", user, "--name", "max-channels", "--value", "9")
        assert api.json(f"/api/user-limits/{q(user)}")[0]["value"] == {"max-channels": 9}
        assert user in admin2("list", "user_limits").stdout
        admin2("delete", "user_limit", "--username", user, "--name", "max-channels")
        assert api.json(f"/api/user-limits/{q(user)}") == []
    finally:
        admin2("delete", "user", "--name", user, check=False)
        admin2("delete", "vhost", "--name", vhost, check=False)


def test_definitions_export_and_import(admin2, api, tmp_path):
    pol, qn, x = uniq("a2dp"), uniq("a2dq"), uniq("a2dx")
    try:
        admin2("declare", "policy", "--name", pol, "--pattern", "^a2d\\.", "--apply-to", "queues",
               "--definition", '{"max-length": 5}')
        exported = tmp_path / "defs.json"
        admin2("definitions", "export", "--file", str(exported))
        defs = json.loads(exported.read_text())
        assert any(p["name"] == pol and p["definition"] == {"max-length": 5} for p in defs["policies"])
        assert "guest" in {u["name"] for u in defs["users"]}

        incoming = {
            "queues": [{"name": qn, "vhost": "/", "durable": True, "auto_delete": False, "arguments": {}}],
            "exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": True,
                           "auto_delete": False, "internal": False, "arguments": {}}],
            "bindings": [{"source": x, "vhost": "/", "destination": qn, "destination_type": "queue",
                          "routing_key": "", "arguments": {}}],
        }
        imported = tmp_path / "import.json"
        imported.write_text(json.dumps(incoming))
        admin2("definitions", "import", "--file", str(imported))
        assert api.json(f"/api/queues/%2F/{q(qn)}")["durable"] is True
        assert api.json(f"/api/exchanges/%2F/{q(x)}")["type"] == "fanout"
        assert len(api.json(f"/api/bindings/%2F/e/{q(x)}/q/{q(qn)}")) == 1
    finally:
        api.delete(f"/api/policies/%2F/{q(pol)}")
        api.delete(f"/api/queues/%2F/{q(qn)}")
        api.delete(f"/api/exchanges/%2F/{q(x)}")


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_checks(admin2, broker):
    for check in ("local_alarms", "cluster_wide_alarms", "node_is_quorum_critical"):
        admin2("health_check", check)
    admin2("health_check", "port_listener", "--port", str(broker))
    admin2("health_check", "protocol_listener", "--protocol", "amqp")
    # a port nothing listens on fails the check: non-zero exit, and it says so
    port = unused_port()
    r = admin2("health_check", "port_listener", "--port", str(port), check=False)
    assert r.returncode != 0, r.stdout + r.stderr
    assert str(port) in r.stdout + r.stderr


def test_nodes_answer_in_rabbitmqs_shape(api, broker):
    """GET /api/nodes and /api/nodes/{name}: RabbitMQ's fields with real values."""
    [node] = api.json("/api/nodes")
    assert node["type"] == "disc" and node["running"] is True
    if external_port() is None:  # RabbitMQ 4's field, required by rabbitmqadmin v2; 3.10 lacks it
        assert node["being_drained"] is False
    assert node["os_pid"].isdigit()
    for key in ("uptime", "mem_used", "mem_limit", "disk_free", "disk_free_limit", "fd_used", "fd_total",
                "sockets_used", "sockets_total", "proc_used", "proc_total", "processors", "run_queue"):
        assert isinstance(node[key], int) and node[key] >= 0, key
    assert node["mem_used"] > 0 and node["fd_used"] > 0 and node["fd_total"] >= node["fd_used"]
    assert node["mem_alarm"] is False and node["disk_free_alarm"] is False
    assert {"name", "description", "version"} <= set(node["applications"][0])
    assert "rabbit" in {a["name"] for a in node["applications"]}
    assert {"direct", "fanout", "topic", "headers"} <= {x["name"] for x in node["exchange_types"]}
    assert any(m["name"] == "PLAIN" and m["enabled"] for m in node["auth_mechanisms"])
    assert node["contexts"][0]["path"] == "/"
    for key in ("partitions", "cluster_links", "enabled_plugins", "log_files", "config_files"):
        assert isinstance(node[key], list), key
    assert node["rates_mode"] in ("none", "basic", "detailed")

    one = api.json(f"/api/nodes/{q(node['name'])}")
    assert one["name"] == node["name"] and one["os_pid"] == node["os_pid"]
    assert one["uptime"] >= node["uptime"]


@pytest.mark.ours_only
def test_an_unknown_node_is_404(api):
    # RabbitMQ 3.10 answers 500 here
    r = api.get("/api/nodes/nobody%40nowhere")
    assert (r.status, r.json()["error"]) == (404, "Object Not Found")


def test_nodes_are_for_monitoring_users(api):
    user = uniq("a2mgmt")
    api.ok("PUT", f"/api/users/{q(user)}", {"password": "pw", "tags": "management"})
    try:
        for path in ("/api/nodes", "/api/nodes/broker%40localhost"):
            r = api.as_user(user, "pw").get(path)
            assert (r.status, r.reason()) == (401, "Not monitor user"), path
    finally:
        api.delete(f"/api/users/{q(user)}")
