"""RabbitMQ's health-check endpoints, as a container orchestrator's probes and monitoring
scripts use them: a healthy check answers 200 {"status":"ok"}, a failing one 503
{"status":"failed","reason":...} with what it found; broker-cli health exits 0 or 69
(EX_UNAVAILABLE, as rabbitmq-diagnostics check_* do). Answers checked against RabbitMQ
3.10's management API."""
import os
import subprocess
import urllib.parse

import pytest

from conftest import uniq
from httpapi import ALL, Api, api, q, reg  # noqa: F401
from test_cli import binary, cli, home, ok  # noqa: F401

HUGE = str(10**18)


def http_port(url):
    return urllib.parse.urlsplit(url).port


def check(api, path):
    r = api.get(path)
    return r.status, r.json()


@pytest.mark.parametrize("name", ["alarms", "local-alarms", "virtual-hosts"])
def test_healthy_checks_answer_200_ok(api, name):
    assert check(api, f"/api/health/checks/{name}") == (200, {"status": "ok"})


def test_one_node_is_never_quorum_critical(api):
    assert check(api, "/api/health/checks/node-is-quorum-critical") == (
        200, {"status": "ok", "reason": "single node cluster"})


def test_port_listener_knows_the_amqp_and_http_ports(api, broker, http_url):
    for port in (broker, http_port(http_url)):
        assert check(api, f"/api/health/checks/port-listener/{port}") == (200, {"status": "ok", "port": port})
    status, body = check(api, "/api/health/checks/port-listener/1")
    assert status == 503, body
    assert body["status"] == "failed" and body["reason"] == "No active listener", body
    assert body["missing"] == 1 and broker in body["ports"] and http_port(http_url) in body["ports"], body
    assert check(api, "/api/health/checks/port-listener/abc") == (
        400, {"error": "bad_request", "reason": "Invalid port"})


def test_protocol_listener_takes_rabbitmqs_names(api):
    for name in ("amqp", "amqp091", "AMQP0-9-1"):
        assert check(api, f"/api/health/checks/protocol-listener/{name}") == (
            200, {"status": "ok", "protocol": "amqp"})
    assert check(api, "/api/health/checks/protocol-listener/http") == (200, {"status": "ok", "protocol": "http"})
    status, body = check(api, "/api/health/checks/protocol-listener/mqtt")
    assert status == 503, body
    assert body["status"] == "failed" and body["reason"] == "No active listener", body
    assert body["missing"] == "mqtt" and "amqp" in body["protocols"] and "http" in body["protocols"], body
    status, body = check(api, "/api/health/checks/protocol-listener/amqps")
    assert status == 503 and body["missing"] == "amqp/ssl", body


def test_aliveness_test_declares_publishes_and_gets(api, reg):
    assert check(api, "/api/aliveness-test/%2F") == (200, {"status": "ok"})
    assert check(api, "/api/aliveness-test/%2F") == (200, {"status": "ok"})
    qd = api.json("/api/queues/%2F/aliveness-test")
    assert (qd["durable"], qd["auto_delete"], qd["exclusive"]) == (False, False, False), qd
    assert qd["messages"] == 0, qd
    v = reg.vhost("alive")
    assert check(api, f"/api/aliveness-test/{q(v)}") == (200, {"status": "ok"})
    assert api.get("/api/aliveness-test/no-such-vhost").status == 404


def test_checks_need_a_management_user_and_aliveness_the_vhost(api, reg):
    nobody = reg.user("hc-none", tags="")
    r = api.as_user(nobody, "pw").get("/api/health/checks/alarms")
    assert (r.status, r.json()) == (401, {"error": "not_authorised", "reason": "Not management user"})
    mgmt = reg.user("hc-mgmt", tags="management")
    m = api.as_user(mgmt, "pw")
    assert check(m, "/api/health/checks/alarms") == (200, {"status": "ok"})
    r = m.get("/api/aliveness-test/%2F")
    assert r.status == 401 and r.json()["error"] == "not_authorised", r
    api.ok("PUT", f"/api/permissions/%2F/{q(mgmt)}", ALL)
    assert check(m, "/api/aliveness-test/%2F") == (200, {"status": "ok"})


@pytest.mark.ours_only
def test_in_service_and_ready_to_serve_clients(api):
    """RabbitMQ 4.x's checks (3.10 answers 404): up once the API answers."""
    assert check(api, "/api/health/checks/is-in-service") == (200, {"status": "ok"})
    assert check(api, "/api/health/checks/ready-to-serve-clients") == (200, {"status": "ok"})


@pytest.mark.ours_only
def test_an_alarm_fails_the_alarm_checks_and_the_cli_exits_69(own_broker_factory, binary, home):
    b = own_broker_factory("--disk-free-limit", HUGE)
    a = Api(b.http_url)
    alarm = [{"node": "broker@localhost", "resource": "disk"}]
    assert check(a, "/api/health/checks/alarms") == (503, {
        "status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": alarm})
    assert check(a, "/api/health/checks/local-alarms") == (503, {
        "status": "failed", "reason": "There are alarms in effect on the node", "alarms": alarm})
    # the other checks are unaffected
    assert check(a, "/api/health/checks/virtual-hosts") == (200, {"status": "ok"})

    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_CLI_")}
    env["HOME"] = str(home)

    def health(*args):
        return subprocess.run([binary, "health", *args, "--url", b.http_url],
                              capture_output=True, text=True, env=env, timeout=60)

    r = health("local-alarms")
    assert r.returncode == 69, r
    assert r.stderr.strip() == ("broker-cli: health check failed: There are alarms in effect on the node: "
                                "disk on broker@localhost"), r.stderr
    assert r.stdout == ""
    r = health("virtual-hosts")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r


def test_cli_health_exit_codes(cli, broker, http_url):
    assert ok(cli("health", "alarms")) == "ok\n"
    assert ok(cli("health", "port-listener", str(broker))) == "ok\n"
    assert ok(cli("health", "protocol-listener", "amqp")) == "ok\n"
    assert ok(cli("health", "aliveness")) == "ok\n"
    r = cli("health", "port-listener", "1")
    assert r.returncode == 69, r
    assert r.stderr.startswith("broker-cli: health check failed: No active listener: 1 (listening: ["), r.stderr
    r = cli("health", "protocol-listener", "mqtt")
    assert r.returncode == 69 and '"mqtt"' in r.stderr, r
    r = cli("health", "aliveness", "-p", uniq("no-such-vhost"))
    assert r.returncode == 5, r
    r = cli("health", "alarms", "--password", "wrong")
    assert r.returncode == 4, r


@pytest.mark.ours_only
def test_the_tls_listener_answers_the_listener_checks(own_broker_factory, tmp_path):
    from certs import Ca
    from conftest import free_port
    ca = Ca(str(tmp_path))
    cert, key = ca.issue("localhost", server=True, prefix="server")[:2]
    port = free_port()
    b = own_broker_factory("--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key)
    a = Api(b.http_url)
    for name in ("amqps", "amqp%2Fssl"):
        assert check(a, f"/api/health/checks/protocol-listener/{name}") == (
            200, {"status": "ok", "protocol": "amqp/ssl"})
    assert check(a, f"/api/health/checks/port-listener/{port}") == (200, {"status": "ok", "port": port})
    assert check(a, "/api/health/checks/ready-to-serve-clients") == (200, {"status": "ok"})
