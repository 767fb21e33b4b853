"""AMQPS, mutual TLS and HTTPS, with certificates made at run time (certs.py).

The broker serves `--tls-listen` beside the plain listener; pika connects with
`ssl_options`. Covered: a round trip over TLS 1.2 and 1.3, a client that does not trust
the broker's CA, client certificates that are missing, from another CA or expired (all
refused under `--tls-verify-peer`), SASL EXTERNAL by the certificate's common name, the
plain-to-TLS and TLS-to-plain port mistakes, `--listen none`, certificate reload on
SIGHUP, and the management API over HTTPS with broker-cli's `--cacert`."""
import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request

import pika
import pytest

from certs import Ca
from conftest import broker_bin, free_port, round_trip, uniq
from test_raw import read_until_closed

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


@pytest.fixture
def pki(tmp_path):
    """A CA with a server certificate for localhost, and a client certificate for guest."""
    ca = Ca(str(tmp_path))
    server = ca.issue("localhost", server=True, prefix="server")
    client = ca.issue("guest")
    return ca, server, client


def tls_args(ca, server, port, verify=False):
    args = ["--tls-listen", f"127.0.0.1:{port}", "--tls-cert", server[0], "--tls-key", server[1]]
    if verify:
        args += ["--tls-ca", ca.path, "--tls-verify-peer"]
    return args


def context(ca_path, client=None, version=None):
    ctx = ssl.create_default_context(cafile=ca_path)
    if client:
        ctx.load_cert_chain(*client)
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def amqps(port, ctx, credentials=None):
    params = pika.ConnectionParameters(
        "127.0.0.1",
        port,
        credentials=credentials or pika.PlainCredentials("guest", "guest"),
        ssl_options=pika.SSLOptions(ctx, "localhost"),
        connection_attempts=1,
        socket_timeout=5,
    )
    return pika.BlockingConnection(params)


def publish_and_get(conn):
    ch = conn.channel()
    q = uniq("tls")
    ch.queue_declare(q, auto_delete=True)
    ch.basic_publish("", q, b"secret")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert method is not None and body == b"secret"
    ch.close()


def tls_handshake(port, ctx):
    """A bare TLS handshake to the port; returns the TLS socket."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def refused_by_broker(port, ctx):
    """Whether the broker ends the connection before AMQP starts: the handshake fails,
    or (TLS 1.3, where the client's certificate is checked after the client finished)
    the first read fails or finds the socket closed."""
    try:
        s = tls_handshake(port, ctx)
    except (ssl.SSLError, OSError):
        return True
    with s:
        try:
            s.sendall(AMQP_HEADER)
            return s.recv(1024) == b""
        except (ssl.SSLError, OSError):
            return True


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_pika_amqps_round_trip(own_broker_factory, pki, version):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    with tls_handshake(port, context(ca.path, version=version)) as s:
        assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    conn = amqps(port, context(ca.path, version=version))
    publish_and_get(conn)
    conn.close()
    req = urllib.request.Request(b.http_url + "/api/overview")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
    with urllib.request.urlopen(req, timeout=5) as r:
        listeners = {(x["protocol"], x["port"]) for x in json.load(r)["listeners"]}
    assert listeners == {("amqp", b.port), ("amqp/ssl", port)}


def test_pika_amqps_url(own_broker_factory, pki):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    params = pika.URLParameters(f"amqps://guest:guest@localhost:{port}/%2F?connection_attempts=1")
    params.ssl_options = pika.SSLOptions(context(ca.path), "localhost")
    conn = pika.BlockingConnection(params)
    publish_and_get(conn)
    plain = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    # the management API (and so the UI's TLS column) tells the two apart: RabbitMQ's `ssl`
    req = urllib.request.Request(b.http_url + "/api/connections")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
    with urllib.request.urlopen(req, timeout=5) as r:
        by_port = {c["port"]: c["ssl"] for c in json.load(r)}
    assert by_port == {port: True, b.port: False}
    plain.close()
    conn.close()


def test_client_that_does_not_trust_the_ca_refuses_the_broker(own_broker_factory, pki, tmp_path):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    other = Ca(str(tmp_path), name="other CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(port, context(other.path))
    round_trip(amqps(port, context(ca.path)))  # the broker goes on serving
    assert b.proc.poll() is None


def test_verify_peer_refuses_missing_foreign_and_expired_client_certificates(own_broker_factory, pki, tmp_path):
    ca, server, client = pki
    port = free_port()
    own_broker_factory(*tls_args(ca, server, port, verify=True))
    other = Ca(str(tmp_path), name="other CA")
    foreign = other.issue("guest")
    expired = ca.issue("guest", expired=True)
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        assert refused_by_broker(port, context(ca.path, version=version)), "no certificate"
        assert refused_by_broker(port, context(ca.path, foreign, version)), "another CA's"
        assert refused_by_broker(port, context(ca.path, expired, version)), "expired"
    conn = amqps(port, context(ca.path, client))
    publish_and_get(conn)
    conn.close()


def test_external_login_by_certificate_common_name(own_broker_factory, pki):
    ca, server, client = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port, verify=True))
    conn = amqps(port, context(ca.path, client), pika.credentials.ExternalCredentials())
    publish_and_get(conn)
    name = None
    deadline = time.monotonic() + 5
    while name is None and time.monotonic() < deadline:
        req = urllib.request.Request(b.http_url + "/api/connections")
        req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        with urllib.request.urlopen(req, timeout=5) as r:
            rows = json.load(r)
        name = next((c["user"] for c in rows), None)
    assert name == "guest"
    conn.close()


def test_external_login_of_unknown_user_is_refused_with_403(own_broker_factory, pki):
    ca, server, _ = pki
    port = free_port()
    own_broker_factory(*tls_args(ca, server, port, verify=True))
    stranger = ca.issue("no-such-user")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        amqps(port, context(ca.path, stranger), pika.credentials.ExternalCredentials())
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL" in str(info.value)
    # PLAIN is still offered over mutual TLS
    conn = amqps(port, context(ca.path, stranger))
    round_trip(conn)
    conn.close()


def test_external_without_a_client_certificate_is_refused_with_403(own_broker_factory, pki):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    # offered on every TLS connection (as RabbitMQ), refused when there is no certificate
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        amqps(port, context(ca.path), pika.credentials.ExternalCredentials())
    assert "(403) 'ACCESS_REFUSED - Login was refused using authentication mechanism EXTERNAL" in str(info.value)
    # not offered on the plain port: pika finds no mechanism it can use
    params = pika.ConnectionParameters(
        "127.0.0.1", b.port, credentials=pika.credentials.ExternalCredentials(), connection_attempts=1
    )
    with pytest.raises(pika.exceptions.AuthenticationError):
        pika.BlockingConnection(params)


def test_plain_amqp_to_the_tls_port_is_closed(own_broker_factory, pki):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(AMQP_HEADER)
        data, closed = read_until_closed(s)
    assert closed
    assert not data.startswith(b"AMQP") and b"\x01\x00\x00" not in data[:3]
    if data:
        assert data[0] == 0x15, data  # at most a TLS alert record
    conn = amqps(port, context(ca.path))
    round_trip(conn)
    conn.close()
    assert b.proc.poll() is None


def test_silent_client_on_the_tls_port_is_closed_after_the_handshake_timeout(own_broker_factory, pki):
    """The TLS handshake runs under --handshake-timeout-ms: a client that connects and
    says nothing (or stalls mid-handshake) holds a socket no longer than that."""
    ca, server, _ = pki
    port = free_port()
    own_broker_factory("--handshake-timeout-ms", "1000", *tls_args(ca, server, port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        t0 = time.monotonic()
        data, closed = read_until_closed(s, timeout=6.0)
        elapsed = time.monotonic() - t0
    assert closed and data == b""
    assert 0.8 <= elapsed <= 4.0, elapsed


def test_tls_to_the_plain_port_gets_the_protocol_header(own_broker_factory, pki):
    ca, server, _ = pki
    b = own_broker_factory(*tls_args(ca, server, free_port()))
    # a real ClientHello, taken from an in-memory TLS client
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context(ca.path).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[0] == 0x16
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as s:
        s.sendall(hello)
        data, closed = read_until_closed(s)
    assert (data, closed) == (AMQP_HEADER, True)


def test_tls_only_broker(pki, tmp_path):
    ca, server, _ = pki
    port = free_port()
    proc = subprocess.Popen(
        [broker_bin(), "--listen", "none", "--http-listen", "none", "--data-dir", str(tmp_path / "data"),
         *tls_args(ca, server, port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        lines = []
        for raw in iter(proc.stdout.readline, b""):
            lines.append(raw.decode())
            if "broker listening for TLS on" in lines[-1]:
                break
        assert lines[-1].strip() == f"broker listening for TLS on 127.0.0.1:{port}", lines
        assert not any(line.startswith("broker listening on") for line in lines)
        conn = amqps(port, context(ca.path))
        publish_and_get(conn)
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def handshake_ok(port, ctx):
    try:
        tls_handshake(port, ctx).close()
        return True
    except (ssl.SSLError, OSError):
        return False


def test_sighup_reloads_certificates_and_keeps_connections(own_broker_factory, pki, tmp_path):
    ca, server, _ = pki
    port = free_port()
    b = own_broker_factory(*tls_args(ca, server, port))
    established = amqps(port, context(ca.path))
    ch = established.channel()
    q = uniq("reload")
    ch.queue_declare(q, auto_delete=True)

    # a certificate from a new CA replaces the files in place
    new_ca = Ca(str(tmp_path), name="new CA")
    cert, key = new_ca.issue("localhost", server=True)
    os.replace(cert, server[0])
    os.replace(key, server[1])
    b.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: handshake_ok(port, context(new_ca.path))), b.log_tail()
    assert not handshake_ok(port, context(ca.path))
    assert b.proc.poll() is None  # SIGHUP does not stop the broker

    # the connection made before the reload goes on
    ch.basic_publish("", q, b"still here")
    method, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"still here"
    established.close()

    # a broken file is refused and the last good certificate stays
    with open(server[0], "w") as f:
        f.write("not a certificate")
    b.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: "TLS certificates not reloaded" in b.log_tail(100000)), b.log_tail()
    conn = amqps(port, context(new_ca.path))
    round_trip(conn)
    conn.close()


def test_management_api_over_https_and_cli_cacert(own_broker_factory, pki):
    from test_cli import cli_bin

    ca, server, _ = pki
    b = own_broker_factory("--http-tls-cert", server[0], "--http-tls-key", server[1])
    assert b.http_url.startswith("https://127.0.0.1:"), b.http_url
    url = b.http_url.replace("127.0.0.1", "localhost")
    req = urllib.request.Request(url + "/api/overview")
    req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
    with urllib.request.urlopen(req, timeout=5, context=context(ca.path)) as r:
        assert r.status == 200
        assert "management_version" in json.load(r)
    with urllib.request.urlopen(url + "/metrics", timeout=5, context=context(ca.path)) as r:
        assert r.status == 200
    # plain HTTP to the HTTPS port gets no API answer
    with pytest.raises(Exception):
        urllib.request.urlopen(url.replace("https://", "http://") + "/api/overview", timeout=5)

    binary = cli_bin()
    if binary is None:
        pytest.skip("broker-cli not built")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_CLI_")}
    env["HOME"] = str(os.path.dirname(ca.path))
    run = lambda *a: subprocess.run([binary, "--url", url, *a], capture_output=True, text=True, env=env, timeout=60)
    good = run("--cacert", ca.path, "status")
    assert good.returncode == 0, good.stderr
    unknown = run("status")  # the test CA is not among the public roots
    assert unknown.returncode == 3, unknown.stderr

    # SIGHUP renews the HTTPS certificate too
    new_ca = Ca(os.path.dirname(ca.path), name="new CA")
    cert, key = new_ca.issue("localhost", server=True)
    os.replace(cert, server[0])
    os.replace(key, server[1])
    b.proc.send_signal(signal.SIGHUP)
    port = int(url.rsplit(":", 1)[1])
    assert wait_until(lambda: handshake_ok(port, context(new_ca.path))), b.log_tail()
    renewed = run("--cacert", new_ca.path, "status")
    assert renewed.returncode == 0, renewed.stderr
