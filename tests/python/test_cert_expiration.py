"""RabbitMQ's certificate-expiration health check,
`GET /api/health/checks/certificate-expiration/{within}/{unit}`, with certificates made at
run time (certs.py): a server certificate that ends in three days fails a one-week check
and passes a one-day check, the CA given with --tls-ca counts as the listener's
`cacertfile`, the management API's HTTPS certificate is checked too, bad input gets
RabbitMQ's 400 texts, and `broker-cli health certificate-expiration` exits 69 naming the
file."""
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
from cryptography import x509

from certs import Ca
from conftest import free_port
from httpapi import Api, Response, api  # noqa: F401 (the api fixture)

CHECK = "/api/health/checks/certificate-expiration"


def expires_on(cert_path):
    """The certificate's end as RabbitMQ prints it: `2025-03-01 9:05:07` (UTC)."""
    with open(cert_path, "rb") as f:
        d = x509.load_pem_x509_certificate(f.read()).not_valid_after_utc
    return f"{d.year}-{d.month:02}-{d.day:02} {d.hour}:{d.minute:02}:{d.second:02}"


class HttpsGet:
    """GET with guest's basic auth over HTTPS, trusting `ca_path`; never raises on a status."""

    def __init__(self, base, ca_path):
        self.base = base.replace("127.0.0.1", "localhost")
        self.ctx = ssl.create_default_context(cafile=ca_path)

    def get(self, path):
        req = urllib.request.Request(self.base + path)
        req.add_header("Authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")  # guest:guest
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ctx) as r:
                return Response(r.status, r.headers, r.read(), path)
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read(), path)


@pytest.fixture
def soon(tmp_path):
    """A CA (30 days) and a server certificate for localhost that ends in 3 days."""
    ca = Ca(str(tmp_path))
    return ca, ca.issue("localhost", server=True, prefix="soon", days=3)


def test_no_tls_listener_is_always_ok(api):
    for within, unit in [("1", "days"), ("100", "years"), ("0", "weeks"), ("1", "MONTHS"), ("-1", "days")]:
        r = api.get(f"{CHECK}/{within}/{unit}")
        assert (r.status, r.json()) == (200, {"status": "ok"}), (within, unit)


@pytest.mark.parametrize("within,unit,reason", [
    ("1", "day", "Time unit not recognised. Supported units: days, weeks, months, years."),
    ("1", "fortnights", "Time unit not recognised. Supported units: days, weeks, months, years."),
    ("abc", "days", "Invalid expiration value."),
    ("1.5", "days", "Invalid expiration value."),
    ("abc", "fortnights", "Invalid expiration value."),
])
def test_bad_input_is_rabbitmqs_400(api, within, unit, reason):
    r = api.get(f"{CHECK}/{within}/{unit}")
    assert (r.status, r.json()) == (400, {"error": "bad_request", "reason": reason})


def test_needs_credentials(http_url):
    r = Api(http_url).as_user("guest", "wrong").get(f"{CHECK}/1/days")
    assert r.status == 401


def test_an_expiring_amqps_certificate_fails_the_check(own_broker_factory, soon):
    ca, (cert, key) = soon
    port = free_port()
    b = own_broker_factory("--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key)
    a = Api(b.http_url)
    for within, unit in [("1", "days"), ("2", "days"), ("-5", "years")]:
        r = a.get(f"{CHECK}/{within}/{unit}")
        assert (r.status, r.json()) == (200, {"status": "ok"}), (within, unit)
    for within, unit in [("1", "weeks"), ("4", "days"), ("1", "months"), ("1", "years")]:
        r = a.get(f"{CHECK}/{within}/{unit}")
        assert r.status == 503, (within, unit, r.json())
        assert r.json() == {
            "status": "failed",
            "reason": "Certificates expiring",
            "expired": [{
                "node": "broker@localhost",
                "protocol": "amqp/ssl",
                "interface": "127.0.0.1",
                "port": port,
                "certfile": cert,
                "cacertfile": None,
                "certfile_expires_on": [expires_on(cert)],
                "cacertfile_expires_on": [],
            }],
        }


def test_the_ca_and_the_https_certificate_are_checked(own_broker_factory, soon):
    ca, (cert, key) = soon
    port = free_port()
    b = own_broker_factory(
        "--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key,
        "--tls-ca", ca.path, "--tls-verify-peer",
        "--http-tls-cert", cert, "--http-tls-key", key,
    )
    assert b.http_url.startswith("https://")
    a = HttpsGet(b.http_url, ca.path)
    # the CA (30 days) expires within two months, the server certificate within a week
    r = a.get(f"{CHECK}/2/months")
    assert r.status == 503
    by_protocol = {e["protocol"]: e for e in r.json()["expired"]}
    assert set(by_protocol) == {"amqp/ssl", "https"}
    amqps = by_protocol["amqp/ssl"]
    assert (amqps["cacertfile"], amqps["cacertfile_expires_on"]) == (ca.path, [expires_on(ca.path)])
    assert amqps["certfile_expires_on"] == [expires_on(cert)]
    https = by_protocol["https"]
    assert (https["certfile"], https["cacertfile"], https["port"]) == (cert, None, int(b.http_url.rsplit(":", 1)[1]))
    assert https["certfile_expires_on"] == [expires_on(cert)]
    # a week: only the server certificates, the CA stays out
    r = a.get(f"{CHECK}/1/weeks")
    assert r.status == 503
    assert all(e["cacertfile_expires_on"] == [] for e in r.json()["expired"])
    assert (a.get(f"{CHECK}/1/days").status) == 200


def test_broker_cli_reports_expiring_certificates(own_broker_factory, soon):
    from test_cli import cli_bin
    binary = cli_bin()
    if binary is None:
        pytest.skip("broker-cli binary not built")
    ca, (cert, key) = soon
    port = free_port()
    b = own_broker_factory("--tls-listen", f"127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key)

    def cli(*args):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_CLI_")}
        return subprocess.run([binary, "--url", b.http_url, "health", "certificate-expiration", *args],
                              capture_output=True, text=True, env=env, timeout=30)

    r = cli("--within", "1", "--unit", "days")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    r = cli()  # rabbitmq-diagnostics' default: 4 weeks
    assert r.returncode == 69, r
    assert r.stderr.strip() == (
        f"broker-cli: health check failed: Certificates expiring: amqp/ssl port {port}, "
        f"{cert} expires on [\"{expires_on(cert)}\"]"
    )
    r = cli("--within", "1", "--unit", "fortnights")
    assert r.returncode != 0 and "Time unit not recognised" in r.stderr, r
