"""Password hashes as RabbitMQ makes them: rabbit_password_hashing_sha256 (the default)
and rabbit_password_hashing_sha512, base64(salt4 + HASH(salt4 + password)). A SHA-512
hash is accepted in PUT /api/users and in a definitions import, logins check against
it, and exports carry each user's algorithm; `--password-hashing sha512` makes new
passwords SHA-512, as RabbitMQ's password_hashing_module does."""
import base64
import hashlib
import os

import pika
import pytest

from conftest import uniq
from httpapi import ALL, Api, amqp, api, q, reg  # noqa: F401

SHA512 = "rabbit_password_hashing_sha512"


def sha512_hash(password, salt=None):
    salt = salt if salt is not None else os.urandom(4)
    return base64.b64encode(salt + hashlib.sha512(salt + password.encode()).digest()).decode()


def is_sha512_of(password_hash, password):
    raw = base64.b64decode(password_hash)
    return len(raw) == 68 and hashlib.sha512(raw[:4] + password.encode()).digest() == raw[4:]


def test_a_sha512_hash_is_accepted_and_logins_check_against_it(api, reg, amqp):
    u = uniq("u512")
    reg.users.append(u)
    h = sha512_hash("s3cret-512")
    r = api.put(f"/api/users/{q(u)}", {"password_hash": h, "hashing_algorithm": SHA512, "tags": "management"})
    assert r.status == 201, r
    one = api.json(f"/api/users/{q(u)}")
    assert (one["password_hash"], one["hashing_algorithm"]) == (h, SHA512), one
    api.ok("PUT", f"/api/permissions/%2F/{q(u)}", ALL)
    assert amqp(user=u, password="s3cret-512").is_open
    assert api.as_user(u, "s3cret-512").json("/api/whoami")["name"] == u
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        amqp(user=u, password="s3cret-51")
    # changing only the tags keeps the hash and its algorithm
    api.ok("PUT", f"/api/users/{q(u)}", {"password_hash": h, "hashing_algorithm": SHA512, "tags": ""})
    assert amqp(user=u, password="s3cret-512").is_open


def test_definitions_import_and_export_keep_sha512(api, amqp):
    u = uniq("def512")
    h = sha512_hash("imp0rted-512")
    defs = {"users": [{"name": u, "password_hash": h, "hashing_algorithm": SHA512, "tags": ""}],
            "permissions": [{"user": u, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]}
    try:
        assert api.post("/api/definitions", defs).status in (201, 204)
        assert amqp(user=u, password="imp0rted-512").is_open
        [exported] = [x for x in api.json("/api/definitions")["users"] if x["name"] == u]
        assert (exported["password_hash"], exported["hashing_algorithm"]) == (h, SHA512), exported
    finally:
        api.delete(f"/api/users/{q(u)}")


@pytest.mark.ours_only
def test_the_password_hashing_flag_makes_new_passwords_sha512(own_broker_factory):
    b = own_broker_factory("--password-hashing", "sha512")
    a = Api(b.http_url)
    u = uniq("new512")
    assert a.put(f"/api/users/{q(u)}", {"password": "fresh", "tags": "management"}).status == 201
    one = a.json(f"/api/users/{q(u)}")
    assert one["hashing_algorithm"] == SHA512 and is_sha512_of(one["password_hash"], "fresh"), one
    assert a.as_user(u, "fresh").json("/api/whoami")["name"] == u
    assert a.as_user(u, "stale").get("/api/whoami").status == 401
    # existing SHA-256 hashes (guest's) still log in
    guest = a.json("/api/users/guest")
    assert guest["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert a.get("/api/whoami").status == 200


@pytest.mark.ours_only
def test_an_unknown_hashing_algorithm_is_refused(api, reg):
    """RabbitMQ also takes MD5 (rabbit_password_hashing_md5); we refuse it (too weak)."""
    u = uniq("md5")
    reg.users.append(u)
    r = api.put(f"/api/users/{q(u)}", {"password_hash": sha512_hash("x"),
                                       "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ""})
    assert r.status == 400 and "unsupported hashing algorithm" in r.reason(), r


@pytest.mark.ours_only
def test_a_bad_password_hashing_flag_stops_the_broker(tmp_path):
    import subprocess
    from conftest import broker_bin
    r = subprocess.run([broker_bin(), "--password-hashing", "md5", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "expected sha256 or sha512" in r.stderr, r.stderr
