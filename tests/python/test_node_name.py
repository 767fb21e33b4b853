"""`--node-name`: the name the management API reports for the node (RabbitMQ's
`rabbit@host`), the one a cluster will know it by. Every place the API names the node
uses it, and broker-cli finds it rather than assuming a default."""
import subprocess

import pika
import pytest

from conftest import broker_bin, uniq
from httpapi import Api, eventually
from test_cli import cli_bin

pytestmark = pytest.mark.ours_only


def run_cli(url, *args):
    return subprocess.run([cli_bin(), "--url", url, *args], capture_output=True, text=True, timeout=30)


def test_the_configured_name_is_what_every_api_answer_calls_the_node(own_broker_factory):
    b = own_broker_factory("--node-name", "rabbit@h1.example")
    api = Api(b.http_url)
    nodes = api.json("/api/nodes")
    assert [n["name"] for n in nodes] == ["rabbit@h1.example"]
    assert api.json("/api/nodes/rabbit@h1.example")["name"] == "rabbit@h1.example"
    assert api.get("/api/nodes/broker@localhost").status == 404
    overview = api.json("/api/overview")
    assert overview["node"] == "rabbit@h1.example"
    assert {l["node"] for l in overview["listeners"]} == {"rabbit@h1.example"}
    # a queue and a connection are on this node
    q = uniq("nn")
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.port, credentials=pika.PlainCredentials("guest", "guest")))
    try:
        conn.channel().queue_declare(q)
        assert api.json(f"/api/queues/%2F/{q}")["node"] == "rabbit@h1.example"
        conns = eventually(lambda: api.json("/api/connections") or False)
        assert {c["node"] for c in conns} == {"rabbit@h1.example"}
    finally:
        conn.close()


def test_broker_cli_sets_the_watermark_on_the_node_whatever_its_name(own_broker_factory):
    b = own_broker_factory("--node-name", "rabbit@h2")
    r = run_cli(b.http_url, "set-memory-high-watermark", "0.5")
    assert r.returncode == 0, r.stderr
    assert Api(b.http_url).json("/api/nodes/rabbit@h2")["mem_limit"] > 0


@pytest.mark.parametrize("name", ["", "has space", "x" * 256])
def test_a_bad_node_name_stops_the_broker_with_a_clear_message(tmp_path, name):
    r = subprocess.run([broker_bin(), "--node-name", name, "--data-dir", str(tmp_path),
                        "--listen", "127.0.0.1:0", "--http-listen", "none"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "invalid node name" in r.stderr, r.stderr
