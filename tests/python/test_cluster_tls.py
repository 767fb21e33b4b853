"""TLS between cluster nodes (issue 16; docs/operations.md "TLS between nodes"): three
brokers started with `--cluster-tls-cert/-key/-ca` (node certificates from one CA,
made by certs.py, naming 127.0.0.1) form a cluster and carry a quorum queue declared on
one node, published to with confirms on another and consumed on the third. The cluster
port speaks only TLS and wants a node certificate: Python's ssl completes a handshake
with one, a plain hello is closed unanswered. A fourth broker with the cluster's secret
but a certificate from another CA, or without TLS, talks to no one, says why in its
log, and the cluster goes on as before."""
import os
import socket
import ssl
import sys

import pika
import pytest

from certs import Ca

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cluster"))
from harness import Cluster, Node, channel, eventually  # noqa: E402

pytestmark = [pytest.mark.ours_only, pytest.mark.own_broker]

QQ = {"x-queue-type": "quorum"}


def tls_args(ca, i, prefix="node"):
    cert, key = ca.issue(f"broker-{i}", node=True, prefix=f"{prefix}-{i}")
    return ["--cluster-tls-cert", cert, "--cluster-tls-key", key, "--cluster-tls-ca", ca.path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("cluster-tls")
    return Ca(str(d), name="cluster CA"), d


@pytest.fixture(scope="module")
def tls_cluster(pki):
    ca, _ = pki
    c = Cluster(3, node_args=lambda i: tls_args(ca, i))
    try:
        c.start()
        yield c
    finally:
        c.close()


def running(node):
    return {n["name"] for n in node.api("/api/nodes") if n["running"]}


def intruder(cluster, extra):
    """A fourth broker with the cluster's secret that lists the three as its peers."""
    n = Node(3, "broker-3@cluster", "127.0.0.1", cluster.nodes[0].secret_file, extra_args=extra)
    n.peers = [f"{o.name}@{o.host}:{o.cluster_port}" for o in cluster.nodes]
    return n


def still_whole(cluster, queue):
    """Every node sees all three running, and the quorum queue still takes a confirmed
    publish on one node and gives it back on another."""
    names = {n.name for n in cluster.nodes}
    for node in cluster.nodes:
        assert running(node) == names
        assert "broker-3@cluster" not in {n["name"] for n in node.api("/api/nodes")}
    c1, ch1 = channel(cluster.nodes[1])
    c2, ch2 = channel(cluster.nodes[2])
    try:
        ch1.confirm_delivery()
        ch1.basic_publish("", queue, b"after", properties=pika.BasicProperties(delivery_mode=2))
        got = eventually(lambda: ch2.basic_get(queue, auto_ack=True)[2], what="the message after")
        assert got == b"after"
    finally:
        c1.close()
        c2.close()


def test_a_tls_cluster_forms_and_carries_a_quorum_queue(tls_cluster):
    n0, n1, n2 = tls_cluster.nodes
    for node in tls_cluster.nodes:
        assert running(node) == {n.name for n in tls_cluster.nodes}
        assert "(TLS)" in node.log_tail(200000), node.log_tail()
    c0, ch0 = channel(n0)
    c1, ch1 = channel(n1)
    c2, ch2 = channel(n2)
    try:
        ch0.queue_declare("ctls.q", durable=True, arguments=QQ)
        ch1.confirm_delivery()
        sent = [f"m{i}".encode() * 1000 for i in range(50)]
        for body in sent:
            ch1.basic_publish("", "ctls.q", body, properties=pika.BasicProperties(delivery_mode=2))
        got = []
        for m, _, body in ch2.consume("ctls.q", inactivity_timeout=10):
            assert m is not None, f"only {len(got)} of {len(sent)} arrived"
            got.append(body)
            ch2.basic_ack(m.delivery_tag)
            if len(got) == len(sent):
                break
        ch2.cancel()
        assert got == sent
    finally:
        for c in (c0, c1, c2):
            c.close()


def test_the_cluster_port_speaks_tls_with_node_certificates_only(tls_cluster, pki):
    ca, d = pki
    n0 = tls_cluster.nodes[0]
    addr = (n0.host, n0.cluster_port)
    # a node certificate from the cluster CA: the handshake completes, and the node
    # presents its own certificate, which names 127.0.0.1
    cert, key = ca.issue("probe", node=True, prefix="probe")
    ctx = ssl.create_default_context(cafile=ca.path)
    ctx.load_cert_chain(cert, key)
    with socket.create_connection(addr, timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            assert subject["commonName"] == "broker-0"
    # a plain hello (what a node without TLS sends) is closed unanswered (reset: the
    # hello was left unread)
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"\x00\x00\x00\x0cBRKC\x00\x02\x00\x00\x00\x00")
        try:
            answer = s.recv(64)
        except ConnectionResetError:
            answer = b""
        assert answer == b""
    eventually(lambda: "the peer dialed without TLS" in n0.log_tail(200000),
               what="the plain dialer refused in the log")
    # TLS without a client certificate: refused (fail_if_no_peer_cert)
    anon = ssl.create_default_context(cafile=ca.path)
    with socket.create_connection(addr, timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with anon.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(b"\x00\x00\x00\x0cBRKC")
                if s.recv(64) == b"":
                    raise ConnectionError("closed")


def test_a_node_with_a_certificate_from_another_ca_cannot_join(tls_cluster, tmp_path):
    n0, n1, n2 = tls_cluster.nodes
    ch = channel(n0)
    ch[1].queue_declare("ctls.other", durable=True, arguments=QQ)
    ch[0].close()
    other = Ca(str(tmp_path), name="other CA")
    x = intruder(tls_cluster, tls_args(other, 3, prefix="intruder"))
    try:
        x.start()
        eventually(lambda: "TLS handshake failed" in x.log_tail(200000), what="the intruder's log")
        listed = x.api("/api/nodes")
        assert not any(n["running"] for n in listed if n["name"] != x.name), listed
        assert not any(n["metadata_member"] for n in listed), listed
        # the cluster's nodes refused it (node 0 may have logged the probe's plain
        # hello from this address a moment ago: one line a minute per address)
        eventually(lambda: any("refused a cluster connection: TLS handshake failed" in n.log_tail(200000)
                               for n in (n1, n2)), what="the cluster's refusal in its logs")
        still_whole(tls_cluster, "ctls.other")
    finally:
        x.remove()


def test_a_node_without_tls_cannot_join(tls_cluster):
    x = intruder(tls_cluster, [])
    try:
        x.start()
        # it dials the TLS nodes in plain text and is cut off, saying what may be wrong
        eventually(lambda: "requires cluster TLS" in x.log_tail(200000),
                   what="the intruder's failed dials")
        listed = x.api("/api/nodes")
        assert not any(n["running"] for n in listed if n["name"] != x.name), listed
        still_whole(tls_cluster, "ctls.other")
    finally:
        x.remove()
