"""amqplib (Node) over amqps://, the third client the TLS listener is checked with (pika
and lapin are the others): a confirmed publish and a consume with ack over TLS, and a
client that trusts another CA refused at the handshake. The script is tests/node/amqps.js;
scripts/test.sh installs amqplib there with `npm ci` from the committed lockfile. Skipped
when node or the installed amqplib is missing."""
import json
import pathlib
import shutil
import subprocess

import pytest

from certs import Ca
from conftest import free_port

NODE_DIR = pathlib.Path(__file__).resolve().parent.parent / "node"


@pytest.fixture(scope="module")
def node():
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "amqplib").is_dir():
        pytest.skip("amqplib is not installed (scripts/test.sh runs npm ci in tests/node)")
    return binary


def run(node, *args):
    r = subprocess.run([node, str(NODE_DIR / "amqps.js"), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def tls_broker(own_broker_factory, tmp_path):
    ca = Ca(str(tmp_path))
    cert, key = ca.issue("localhost", server=True, prefix="server")
    port = free_port()
    own_broker_factory("--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key)
    return ca, port


def test_amqplib_publishes_with_confirms_and_consumes_over_amqps(node, tls_broker):
    ca, port = tls_broker
    got = run(node, "round-trip", str(port), ca.path)
    assert got["connected"] is True
    assert got["confirmed"] == "ack"
    assert got["got"]["body"] == "hello over TLS"
    assert got["got"]["messageId"] == "m1"
    assert got["got"]["redelivered"] is False
    assert got["got"]["routingKey"].startswith("amq.gen-")


def test_amqplib_refuses_a_broker_signed_by_another_ca(node, tls_broker, tmp_path):
    _, port = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    got = run(node, "connect", str(port), Ca(str(other), name="other CA").path)
    assert got["connected"] is False
    assert got["error"] in ("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "SELF_SIGNED_CERT_IN_CHAIN",
                            "UNABLE_TO_GET_ISSUER_CERT_LOCALLY"), got
