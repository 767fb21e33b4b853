"""RabbitMQ's own rabbitmqadmin (from Debian's rabbitmq-server package, put in
.venv/bin by scripts/fetch-rabbitmqadmin.sh) works against our management API unchanged:
it lists queues, exchanges and bindings, declares a queue and a binding, publishes and
gets a message, and deletes what it made.

Runs against RabbitMQ too: BROKER_CLI_TEST_URL=http://127.0.0.1:15673 AMQP_TEST_PORT=5673."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import urllib.parse
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def rabbitmqadmin_path():
    for p in (os.environ.get("RABBITMQADMIN"), ROOT / ".venv" / "bin" / "rabbitmqadmin", shutil.which("rabbitmqadmin")):
        if p and os.path.exists(p):
            return str(p)
    return None


@pytest.fixture(scope="module")
def admin(http_url):
    script = rabbitmqadmin_path()
    if script is None:
        pytest.skip("rabbitmqadmin not available (scripts/fetch-rabbitmqadmin.sh fetches it)")
    url = urllib.parse.urlparse(http_url)

    def run(*args, check=True):
        r = subprocess.run(
            [sys.executable, script, "-H", url.hostname, "-P", str(url.port), "-u", "guest", "-p", "guest", *args],
            capture_output=True, text=True, timeout=30,
        )
        if check:
            assert r.returncode == 0, f"rabbitmqadmin {' '.join(args)} failed: {r.stdout}{r.stderr}"
        return r

    return run


def as_json(r):
    return json.loads(r.stdout)


def test_rabbitmqadmin_round_trip(admin):
    q = f"admin-q-{uuid.uuid4().hex[:8]}"
    x = f"admin-x-{uuid.uuid4().hex[:8]}"
    try:
        admin("declare", "queue", f"name={q}", "durable=false")
        admin("declare", "exchange", f"name={x}", "type=direct", "durable=false")
        admin("declare", "binding", f"source={x}", f"destination={q}", "routing_key=rk")

        queues = as_json(admin("-f", "raw_json", "list", "queues"))
        assert any(row["name"] == q for row in queues)
        exchanges = as_json(admin("-f", "raw_json", "list", "exchanges"))
        assert any(row["name"] == x and row["type"] == "direct" for row in exchanges)
        bindings = as_json(admin("-f", "raw_json", "list", "bindings"))
        assert any(b["source"] == x and b["destination"] == q and b["routing_key"] == "rk" for b in bindings)
        # the table format works too (it is what operators read)
        assert q in admin("list", "queues", "name", "messages").stdout

        out = admin("publish", f"exchange={x}", "routing_key=rk", "payload=hello from rabbitmqadmin").stdout
        assert "Message published" in out
        got = as_json(admin("-f", "raw_json", "get", f"queue={q}", "ackmode=ack_requeue_false"))
        assert [m["payload"] for m in got] == ["hello from rabbitmqadmin"]
        assert got[0]["routing_key"] == "rk" and got[0]["exchange"] == x

        admin("delete", "binding", f"source={x}", f"destination={q}", "destination_type=queue", "properties_key=rk")
        bindings = as_json(admin("-f", "raw_json", "list", "bindings"))
        assert not any(b["source"] == x and b["destination"] == q for b in bindings)
    finally:
        admin("delete", "queue", f"name={q}", check=False)
        admin("delete", "exchange", f"name={x}", check=False)
    queues = as_json(admin("-f", "raw_json", "list", "queues"))
    assert not any(row["name"] == q for row in queues)


def test_rabbitmqadmin_users_vhosts_permissions(admin):
    user = f"admin-u-{uuid.uuid4().hex[:8]}"
    vhost = f"admin-v-{uuid.uuid4().hex[:8]}"
    try:
        admin("declare", "vhost", f"name={vhost}")
        admin("declare", "user", f"name={user}", "password=pw", "tags=monitoring")
        admin("declare", "permission", f"vhost={vhost}", f"user={user}", "configure=.*", "write=.*", "read=.*")
        users = as_json(admin("-f", "raw_json", "list", "users"))
        assert any(u["name"] == user and "monitoring" in (u["tags"] if isinstance(u["tags"], list) else u["tags"].split(",")) for u in users)
        perms = as_json(admin("-f", "raw_json", "list", "permissions"))
        assert any(p["user"] == user and p["vhost"] == vhost and p["read"] == ".*" for p in perms)
        assert any(v["name"] == vhost for v in as_json(admin("-f", "raw_json", "list", "vhosts")))
    finally:
        admin("delete", "user", f"name={user}", check=False)
        admin("delete", "vhost", f"name={vhost}", check=False)
    assert not any(u["name"] == user for u in as_json(admin("-f", "raw_json", "list", "users")))
