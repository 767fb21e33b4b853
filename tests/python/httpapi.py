"""Helpers for the management HTTP API suites (test_http_api.py, test_access.py).

Standard library only: urllib with HTTP basic auth. `Api.call` never raises on an HTTP
error status; it returns a `Response` with .status, .headers, .body, .json() and .url."""
import base64
import hashlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pika
import pytest

from conftest import uniq

ALL = {"configure": ".*", "write": ".*", "read": ".*"}


def q(name):
    """One URL path segment (RabbitMQ's API wants '/' as %2F)."""
    return urllib.parse.quote(name, safe="")


class Response:
    def __init__(self, status, headers, body, url):
        self.status, self.headers, self.body, self.url = status, headers, body, url

    def json(self):
        return json.loads(self.body)

    def reason(self):
        try:
            return self.json().get("reason")
        except Exception:
            return None

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Api:
    def __init__(self, base, user="guest", password="guest"):
        self.base = base.rstrip("/")
        self.user, self.password = user, password

    def as_user(self, user, password):
        return Api(self.base, user, password)

    def call(self, method, path, body=None, raw=None, headers=None, auth=True):
        url = self.base + path
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
        elif raw is not None:
            data = raw
        if data is not None:
            h.setdefault("content-type", "application/json")
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            h["authorization"] = f"Basic {token}"
        r = urllib.request.Request(url, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=15) as resp:
                return Response(resp.status, resp.headers, resp.read(), url)
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read(), url)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.call("PUT", path, body=body, **kw)

    def post(self, path, body=None, **kw):
        return self.call("POST", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)

    def ok(self, method, path, body=None, expect=(200, 201, 204), **kw):
        r = self.call(method, path, body=body, **kw)
        assert r.status in expect, f"{method} {path}: {r}"
        return r

    def json(self, path):
        r = self.get(path)
        assert r.status == 200, f"GET {path}: {r}"
        return r.json()


def rabbit_hash(password, salt=None):
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt4 + sha256(salt4 + password))."""
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def check_rabbit_hash(password_hash, password):
    raw = base64.b64decode(password_hash)
    salt, digest = raw[:4], raw[4:]
    return len(raw) == 36 and hashlib.sha256(salt + password.encode()).digest() == digest


class Registry:
    """Vhosts, users, queues and exchanges a test makes through the API; deleted afterwards."""

    def __init__(self, api):
        self.api = api
        self.vhosts, self.users, self.queues, self.exchanges = [], [], [], []

    def vhost(self, prefix="v", grant_guest=True):
        name = uniq(prefix)
        self.vhosts.append(name)
        self.api.ok("PUT", f"/api/vhosts/{q(name)}", expect=(201,))
        if grant_guest:
            # RabbitMQ grants the creating user full permissions; ours may not, and these
            # tests are not about that (test_vhost_creator_gets_full_permissions is).
            self.api.ok("PUT", f"/api/permissions/{q(name)}/guest", ALL)
        return name

    def user(self, prefix="u", password="pw", tags="", perms=None, vhost="/"):
        name = uniq(prefix)
        self.users.append(name)
        self.api.ok("PUT", f"/api/users/{q(name)}", {"password": password, "tags": tags}, expect=(201,))
        if perms is not None:
            self.api.ok("PUT", f"/api/permissions/{q(vhost)}/{q(name)}", perms)
        return name

    def queue(self, prefix="hq", vhost="/", body=None):
        name = uniq(prefix)
        self.queues.append((vhost, name))
        if body is not None:
            self.api.ok("PUT", f"/api/queues/{q(vhost)}/{q(name)}", body, expect=(201,))
        return name

    def exchange(self, prefix="hx", vhost="/", body=None):
        name = uniq(prefix)
        self.exchanges.append((vhost, name))
        if body is not None:
            self.api.ok("PUT", f"/api/exchanges/{q(vhost)}/{q(name)}", body, expect=(201,))
        return name

    def cleanup(self):
        for vhost, name in self.queues:
            self.api.delete(f"/api/queues/{q(vhost)}/{q(name)}")
        for vhost, name in self.exchanges:
            self.api.delete(f"/api/exchanges/{q(vhost)}/{q(name)}")
        for name in self.users:
            self.api.delete(f"/api/users/{q(name)}")
        for name in self.vhosts:
            self.api.delete(f"/api/vhosts/{q(name)}")


@pytest.fixture
def api(http_url):
    return Api(http_url)


@pytest.fixture
def reg(api):
    r = Registry(api)
    yield r
    r.cleanup()


@pytest.fixture
def amqp(broker):
    """Opens pika connections (vhost, user, password, connection name); closes them at the end."""
    opened = []

    def open_(vhost="/", user="guest", password="guest", port=None, name=None):
        props = {"connection_name": name} if name else None
        params = pika.ConnectionParameters(
            "127.0.0.1", port or broker, vhost, pika.PlainCredentials(user, password),
            connection_attempts=1, socket_timeout=5, blocked_connection_timeout=10,
            client_properties=props,
        )
        c = pika.BlockingConnection(params)
        opened.append(c)
        return c

    yield open_
    for c in opened:
        if c.is_open:
            try:
                c.close()
            except Exception:
                pass


def eventually(check, timeout=12.0, interval=0.2, conns=()):
    """Calls check() until it returns without AssertionError and not False (RabbitMQ
    refreshes statistics every few seconds); returns its value. Pumps the given pika connections meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            assert value is not False, "condition still false"
            return value
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        if conns:
            for c in conns:
                c.process_data_events(time_limit=interval / max(len(conns), 1))
        else:
            time.sleep(interval)


def wait_closed(conn, timeout=5.0):
    """Pumps a connection until the broker closes it; returns the ConnectionClosedByBroker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn.process_data_events(time_limit=0.1)
        except pika.exceptions.ConnectionClosedByBroker as e:
            return e
    raise AssertionError("the broker did not close the connection")


def channel_error(conn, action):
    """Runs action(channel) on a fresh channel; returns (reply_code, reply_text) of the
    channel.close it provokes."""
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        action(ch)
        # asynchronous errors (basic.publish) arrive with the next synchronous round trip
        ch.basic_qos(prefetch_count=0)
    return info.value.reply_code, info.value.reply_text


def refusal(exc):
    """The text of a pika connection-stage refusal (ProbableAccessDeniedError and friends)."""
    return str(exc)
