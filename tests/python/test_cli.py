"""broker-cli, run as a process against a management HTTP API.

The binary: BROKER_CLI_BIN, else <repo>/target-cli/debug/broker-cli, else
<repo>/target/debug/broker-cli; the tests are skipped when none exists.
The API: the `http_url` fixture (BROKER_CLI_TEST_URL, e.g. the reference RabbitMQ's
http://127.0.0.1:15673 with AMQP_TEST_PORT=5673 so that `broker` is the same broker).

RabbitMQ refreshes some statistics (message counts, connection lists) every few
seconds, so checks on them poll.
"""
import json
import os
import pathlib
import socket
import subprocess
import time

import pika
import pytest

from conftest import connect, uniq

ROOT = pathlib.Path(__file__).resolve().parents[2]

DEFAULT_COLUMNS = {
    "queues": ["name", "messages", "messages_ready", "messages_unacknowledged", "consumers", "durable", "arguments"],
    "exchanges": ["name", "type", "durable", "auto_delete", "internal", "arguments"],
    "bindings": ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"],
    "connections": ["name", "user", "peer_host", "peer_port", "state", "channels"],
    "channels": ["name", "connection", "number", "user", "consumer_count", "messages_unacknowledged",
                 "prefetch_count"],
    "consumers": ["queue_name", "consumer_tag", "channel", "ack_required", "prefetch_count", "exclusive",
                  "arguments"],
    "vhosts": ["name", "messages", "tracing"],
    "users": ["name", "tags"],
    "permissions": ["user", "vhost", "configure", "write", "read"],
}

EXIT_OTHER, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_CREDENTIALS, EXIT_NOT_FOUND, EXIT_REFUSED = 1, 2, 3, 4, 5, 6


def cli_bin():
    env = os.environ.get("BROKER_CLI_BIN")
    if env:
        return env
    for p in (ROOT / "target-cli" / "debug" / "broker-cli", ROOT / "target" / "debug" / "broker-cli"):
        if p.exists():
            return str(p)
    return None


@pytest.fixture(scope="module")
def binary():
    b = cli_bin()
    if b is None:
        pytest.skip("broker-cli binary not built (cargo build -p broker-cli) and BROKER_CLI_BIN not set")
    return b


@pytest.fixture
def home(tmp_path):
    """An empty HOME: no ~/.config/broker-cli.toml of the user running the tests."""
    d = tmp_path / "home"
    d.mkdir()
    return d


@pytest.fixture
def cli(binary, http_url, home):
    """Runs broker-cli with --url pointing at the API under test; returns the CompletedProcess."""

    def run(*args, url=http_url, stdin=None, env=None, timeout=60):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_CLI_")}
        full_env.pop("XDG_CONFIG_HOME", None)
        full_env["HOME"] = str(home)
        full_env.update(env or {})
        cmd = [binary, *args] + (["--url", url] if url else [])
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=full_env, timeout=timeout)

    return run


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr}"
    return result.stdout


def fails(result, code, *fragments):
    """Asserts the exit code and a one-line error on stderr containing the fragments."""
    assert result.returncode == code, f"expected exit {code}, got {result.returncode}: {result.stderr!r}"
    err = result.stderr.strip()
    if code != EXIT_USAGE:
        assert err.startswith("broker-cli: "), err
        assert "\n" not in err, f"error is not one line: {err!r}"
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    return err


def as_json(result):
    return json.loads(ok(result))


def table_rows(text):
    return [line.split() for line in text.splitlines()]


def wait_for(predicate, timeout=20.0, interval=0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tags_list(tags):
    if isinstance(tags, str):
        return sorted(t for t in tags.split(",") if t)
    return sorted(tags)


def find(rows, **match):
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


@pytest.fixture
def cleanup(cli):
    """Registers cli commands to run after the test (deletes), in reverse order."""
    todo = []
    yield todo.append
    for args in reversed(todo):
        cli(*args)


# --------------------------------------------------------------------------- basics, global options


def test_help_and_version(binary):
    r = subprocess.run([binary, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("queues", "exchanges", "bindings", "connections", "channels", "consumers", "vhosts", "users",
                "permissions", "definitions", "status"):
        assert cmd in r.stdout
    r = subprocess.run([binary, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("broker-cli ")


def test_usage_errors_exit_2(cli):
    fails(cli("queues", "frobnicate"), EXIT_USAGE)
    fails(cli("queues", "list", "--format", "xml"), EXIT_USAGE)
    fails(cli("queues", "declare", "q", "--argument", "no-equals-sign"), EXIT_USAGE)


def test_status(cli):
    out = ok(cli("status"))
    keys = [line.split(":")[0] for line in out.splitlines()]
    for k in ("product", "version", "node", "connections", "channels", "queues", "messages"):
        assert k in keys, out
    summary = as_json(cli("status", "--format", "json"))
    assert isinstance(summary["product"], str) and summary["product"]
    assert isinstance(summary["queues"], int)
    tsv = ok(cli("status", "--format", "tsv"))
    assert all(len(line.split("\t")) == 2 for line in tsv.splitlines())


def test_unreachable_broker_exits_3_naming_the_url(cli):
    url = f"http://127.0.0.1:{free_port()}"
    fails(cli("status", url=url), EXIT_UNREACHABLE, f"cannot reach the broker at {url}")
    fails(cli("queues", "list", url=url), EXIT_UNREACHABLE, url)


def test_wrong_password_exits_4(cli):
    fails(cli("status", "--password", "definitely-wrong"), EXIT_CREDENTIALS, "wrong credentials", "guest")
    fails(cli("queues", "list", "--user", "no-such-user-x", "--password", "x"), EXIT_CREDENTIALS, "no-such-user-x")


def test_config_file_and_environment(cli, http_url, home, tmp_path):
    # Default config file in ~/.config.
    (home / ".config").mkdir()
    (home / ".config" / "broker-cli.toml").write_text(f'url = "{http_url}"\nuser = "guest"\npassword = "guest"\n')
    ok(cli("status", url=None))
    # --config beats the default file; a wrong password there is used.
    bad = tmp_path / "bad.toml"
    bad.write_text(f'url = "{http_url}"\npassword = "wrong"\n')
    fails(cli("status", "--config", str(bad), url=None), EXIT_CREDENTIALS)
    # Environment beats the file, flags beat the environment.
    dead = f"http://127.0.0.1:{free_port()}"
    fails(cli("status", url=None, env={"BROKER_CLI_URL": dead}), EXIT_UNREACHABLE, dead)
    ok(cli("status", "--password", "guest", "--config", str(bad), url=None))
    ok(cli("status", url=http_url, env={"BROKER_CLI_URL": dead}))
    ok(cli("status", "--config", str(bad), url=None, env={"BROKER_CLI_PASSWORD": "guest"}))
    # A broken config file is one clear line.
    broken = tmp_path / "broken.toml"
    broken.write_text("usr = 1\n")
    fails(cli("status", "--config", str(broken), url=None), EXIT_OTHER, str(broken))
    fails(cli("status", "--config", str(tmp_path / "missing.toml"), url=None), EXIT_OTHER, "missing.toml")


# --------------------------------------------------------------------------- every list command


@pytest.mark.parametrize("resource", sorted(DEFAULT_COLUMNS))
def test_list_formats(cli, resource):
    defaults = DEFAULT_COLUMNS[resource]
    table = ok(cli(resource, "list"))
    assert table.splitlines()[0].split() == defaults
    tsv = ok(cli(resource, "list", "--format", "tsv"))
    lines = tsv.splitlines()
    assert lines[0].split("\t") == defaults
    assert all(len(line.split("\t")) == len(defaults) for line in lines)
    rows = as_json(cli(resource, "list", "--format", "json"))
    assert isinstance(rows, list)
    assert all(list(r) == defaults for r in rows)
    # --columns picks and orders columns; same flags on every list.
    picked = [defaults[-1], defaults[0]]
    rows = as_json(cli(resource, "list", "--format", "json", "--columns", ",".join(picked), "--vhost", "/"))
    assert all(list(r) == picked for r in rows)
    tsv = ok(cli(resource, "list", "--format", "tsv", "--columns", ",".join(picked), "-p", "/"))
    assert tsv.splitlines()[0] == "\t".join(picked)


@pytest.mark.parametrize("resource", sorted(DEFAULT_COLUMNS))
def test_unknown_column_exits_2_listing_valid_ones(cli, resource):
    first = DEFAULT_COLUMNS[resource][0]
    err = fails(cli(resource, "list", "--columns", f"{first},bogus_column"), EXIT_USAGE, "bogus_column",
                "valid columns")
    assert DEFAULT_COLUMNS[resource][1] in err
    # Checked before any request: same answer with no broker at all.
    fails(cli(resource, "list", "--columns", "bogus_column", url=f"http://127.0.0.1:{free_port()}"), EXIT_USAGE)


@pytest.mark.parametrize("resource", sorted(DEFAULT_COLUMNS))
def test_list_in_missing_vhost_exits_5(cli, resource):
    vhost = uniq("no-vhost")
    fails(cli(resource, "list", "--vhost", vhost), EXIT_NOT_FOUND, vhost)


# --------------------------------------------------------------------------- queues


def test_queue_declare_list_delete(cli, cleanup):
    q = uniq("cli-q")
    cleanup(("queues", "delete", q))
    out = ok(cli("queues", "declare", q, "--durable", "--argument", "x-max-length=10",
                 "--argument", "x-dead-letter-exchange=cli-dlx", "-a", "x-message-ttl=60000"))
    assert q in out
    # Declaring again with the same properties is fine.
    ok(cli("queues", "declare", q, "--durable", "--argument", "x-max-length=10",
           "--argument", "x-dead-letter-exchange=cli-dlx", "-a", "x-message-ttl=60000"))
    rows = as_json(cli("queues", "list", "--format", "json", "--columns", "name,vhost,durable,auto_delete,arguments"))
    mine = find(rows, name=q)
    assert mine == [{"name": q, "vhost": "/", "durable": True, "auto_delete": False,
                     "arguments": {"x-max-length": 10, "x-dead-letter-exchange": "cli-dlx",
                                   "x-message-ttl": 60000}}]
    # Table: aligned, arguments as compact JSON.
    table = ok(cli("queues", "list"))
    lines = table.splitlines()
    line = next(line for line in lines if line.startswith(q + " "))
    assert '"x-max-length":10' in line
    header_pos = lines[0].index("durable")
    assert line[header_pos:header_pos + 4] == "true"
    # TSV with nested argument column.
    tsv = ok(cli("queues", "list", "--format", "tsv", "--columns", "name,arguments.x-max-length,durable"))
    assert f"{q}\t10\ttrue" in tsv.splitlines()
    # A different declaration is refused, with the broker's reason.
    fails(cli("queues", "declare", q), EXIT_REFUSED, "refused", "durable")
    ok(cli("queues", "delete", q))
    rows = as_json(cli("queues", "list", "--format", "json", "--columns", "name"))
    assert not find(rows, name=q)


def test_missing_queue_exits_5(cli):
    q = uniq("cli-missing")
    fails(cli("queues", "delete", q), EXIT_NOT_FOUND, "not found", q)
    fails(cli("queues", "purge", q), EXIT_NOT_FOUND, q)
    fails(cli("queues", "get", q), EXIT_NOT_FOUND, q)


def publish(port, queue, bodies, **props):
    c = connect(port)
    try:
        ch = c.channel()
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", queue, b, pika.BasicProperties(**props))
    finally:
        c.close()


def ready_count(port, queue):
    c = connect(port)
    try:
        return c.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        c.close()


def test_queue_get_purge_and_delete_flags(cli, broker, cleanup):
    q = uniq("cli-get")
    cleanup(("queues", "delete", q))
    ok(cli("queues", "declare", q))
    publish(broker, q, [b"first", b"second", "dritte \u00e9".encode()], content_type="text/plain",
            headers={"h": 1})
    publish(broker, q, [b"\xff\x00binary"])
    # Default: one message, requeued.
    out = ok(cli("queues", "get", q))
    assert "first" in out and f"routing_key:   {q}" in out and "redelivered:" in out
    assert "text/plain" in out
    assert ready_count(broker, q) == 4
    msgs = as_json(cli("queues", "get", q, "--count", "4", "--format", "json"))
    assert len(msgs) == 4
    assert msgs[0]["routing_key"] == q and msgs[0]["exchange"] == ""
    assert msgs[0]["redelivered"] is True  # requeued by the first get
    assert msgs[0]["properties"]["headers"] == {"h": 1}
    assert msgs[0]["payload"] == "first" and msgs[0]["payload_encoding"] == "string"
    assert msgs[3]["payload_encoding"] == "base64"
    assert ready_count(broker, q) == 4
    tsv = ok(cli("queues", "get", q, "--count", "4", "--format", "tsv")).splitlines()
    assert tsv[0].split("\t")[:3] == ["exchange", "routing_key", "redelivered"]
    assert "dritte \u00e9" in tsv[3]
    # Binary payload shown as base64 in the text form.
    out = ok(cli("queues", "get", q, "--count", "4"))
    assert "payload (base64):" in out and "message 4 of 4" in out
    # ack removes.
    out = ok(cli("queues", "get", q, "--ack-mode", "ack"))
    assert "first" in out
    assert ready_count(broker, q) == 3
    # Not empty: delete --if-empty is refused.
    fails(cli("queues", "delete", q, "--if-empty"), EXIT_REFUSED, "refused")
    ok(cli("queues", "purge", q))
    assert ready_count(broker, q) == 0
    assert "no messages" in ok(cli("queues", "get", q))
    assert as_json(cli("queues", "get", q, "--format", "json")) == []
    ok(cli("queues", "delete", q, "--if-empty", "--if-unused"))
    fails(cli("queues", "delete", q), EXIT_NOT_FOUND)


def test_queue_counts_in_list(cli, broker, cleanup):
    q = uniq("cli-counts")
    cleanup(("queues", "delete", q))
    ok(cli("queues", "declare", q))
    publish(broker, q, [b"a", b"b", b"c"])

    def counts():
        rows = as_json(cli("queues", "list", "--format", "json", "--vhost", "/",
                           "--columns", "name,messages,messages_ready,messages_unacknowledged,consumers"))
        mine = find(rows, name=q)
        return mine and mine[0]["messages"] == 3 and mine[0]

    row = wait_for(counts)
    assert row == {"name": q, "messages": 3, "messages_ready": 3, "messages_unacknowledged": 0, "consumers": 0}


# --------------------------------------------------------------------------- vhosts, exchanges, bindings


def test_vhosts_and_vhost_scoping(cli, cleanup):
    v = uniq("cli-vh")
    cleanup(("vhosts", "delete", v))
    ok(cli("vhosts", "add", v))
    ok(cli("vhosts", "add", v))  # exists: fine
    assert find(as_json(cli("vhosts", "list", "--format", "json")), name=v)
    assert [r["name"] for r in as_json(cli("vhosts", "list", "--format", "json", "--vhost", v))] == [v]
    ok(cli("permissions", "set", "guest", ".*", ".*", ".*", "--vhost", v))
    q = uniq("cli-vq")
    ok(cli("queues", "declare", q, "--vhost", v))
    in_v = as_json(cli("queues", "list", "--format", "json", "--vhost", v, "--columns", "name,vhost"))
    assert in_v == [{"name": q, "vhost": v}]
    in_root = as_json(cli("queues", "list", "--format", "json", "--vhost", "/", "--columns", "name"))
    assert not find(in_root, name=q)
    everywhere = as_json(cli("queues", "list", "--format", "json", "--columns", "name,vhost"))
    assert {"name": q, "vhost": v} in everywhere
    exchanges = as_json(cli("exchanges", "list", "--format", "json", "-p", v, "--columns", "name"))
    assert {"name": "amq.direct"} in exchanges
    ok(cli("vhosts", "delete", v))
    assert not find(as_json(cli("vhosts", "list", "--format", "json")), name=v)
    fails(cli("vhosts", "delete", v), EXIT_NOT_FOUND, v)
    fails(cli("queues", "declare", uniq("q"), "--vhost", v), EXIT_NOT_FOUND, v)


def test_exchanges(cli, cleanup):
    x = uniq("cli-x")
    cleanup(("exchanges", "delete", x))
    ok(cli("exchanges", "declare", x, "--type", "topic", "--durable", "--argument", "alternate-exchange=amq.fanout"))
    rows = as_json(cli("exchanges", "list", "--format", "json"))
    assert find(rows, name=x) == [{"name": x, "type": "topic", "durable": True, "auto_delete": False,
                                   "internal": False, "arguments": {"alternate-exchange": "amq.fanout"}}]
    tsv = ok(cli("exchanges", "list", "--format", "tsv", "--columns", "name,type,vhost"))
    assert f"{x}\ttopic\t/" in tsv.splitlines()
    fails(cli("exchanges", "declare", uniq("cli-x"), "--type", "no-such-type"), EXIT_REFUSED, "no-such-type")
    fails(cli("exchanges", "delete", "amq.direct"), EXIT_REFUSED)
    q = uniq("cli-xq")
    cleanup(("queues", "delete", q))
    ok(cli("queues", "declare", q))
    ok(cli("bindings", "add", x, q, "-k", "#"))
    fails(cli("exchanges", "delete", x, "--if-unused"), EXIT_REFUSED, "in use")
    ok(cli("bindings", "delete", x, q, "-k", "#"))
    ok(cli("exchanges", "delete", x, "--if-unused"))
    fails(cli("exchanges", "delete", x), EXIT_NOT_FOUND, x)


def test_bindings(cli, cleanup):
    x, x2, q = uniq("cli-bx"), uniq("cli-bx2"), uniq("cli-bq")
    cleanup(("queues", "delete", q))
    cleanup(("exchanges", "delete", x))
    cleanup(("exchanges", "delete", x2))
    ok(cli("exchanges", "declare", x, "--type", "topic"))
    ok(cli("exchanges", "declare", x2, "--type", "fanout"))
    ok(cli("queues", "declare", q))
    ok(cli("bindings", "add", x, q, "--routing-key", "a.*"))
    ok(cli("bindings", "add", x, q, "--routing-key", "a.*", "--argument", "x-match=any"))
    ok(cli("bindings", "add", x, q, "-k", "odd/key with space~%"))
    ok(cli("bindings", "add", x, x2, "--destination-type", "exchange", "-k", "e2e"))

    def mine():
        rows = as_json(cli("bindings", "list", "--format", "json", "--vhost", "/"))
        return [r for r in rows if r["source_name"] == x]

    rows = mine()
    assert {"source_name": x, "source_kind": "exchange", "destination_name": q, "destination_kind": "queue",
            "routing_key": "a.*", "arguments": {}} in rows
    assert {"source_name": x, "source_kind": "exchange", "destination_name": q, "destination_kind": "queue",
            "routing_key": "a.*", "arguments": {"x-match": "any"}} in rows
    assert find(rows, destination_name=x2, destination_kind="exchange", routing_key="e2e")
    assert find(rows, routing_key="odd/key with space~%")
    assert len(rows) == 4
    # API field names work as columns too.
    raw = as_json(cli("bindings", "list", "--format", "json", "--columns", "source,destination,properties_key"))
    assert any(r["source"] == x and r["properties_key"] for r in raw)
    # Delete picks the binding with the same routing key and arguments.
    ok(cli("bindings", "delete", x, q, "--routing-key", "a.*", "--argument", "x-match=any"))
    rows = mine()
    assert len(rows) == 3 and find(rows, routing_key="a.*", arguments={})
    ok(cli("bindings", "delete", x, q, "--routing-key", "a.*"))
    ok(cli("bindings", "delete", x, q, "-k", "odd/key with space~%"))
    ok(cli("bindings", "delete", x, x2, "--destination-type", "exchange", "-k", "e2e"))
    assert mine() == []
    fails(cli("bindings", "delete", x, q, "--routing-key", "a.*"), EXIT_NOT_FOUND, "a.*", q)
    fails(cli("bindings", "add", x, uniq("no-q"), "-k", "k"), EXIT_NOT_FOUND)
    fails(cli("bindings", "add", uniq("no-x"), q, "-k", "k"), EXIT_NOT_FOUND)


# --------------------------------------------------------------------------- connections, channels, consumers


def test_connections_channels_consumers(cli, broker, cleanup):
    q = uniq("cli-cq")
    name = uniq("cli-conn")
    cleanup(("queues", "delete", q))
    ok(cli("queues", "declare", q))
    params = pika.ConnectionParameters("127.0.0.1", broker, credentials=pika.PlainCredentials("guest", "guest"),
                                       client_properties={"connection_name": name})
    conn = pika.BlockingConnection(params)
    try:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=7)
        tag = ch.basic_consume(q, lambda *a: None, arguments={"x-priority": 3})

        def my_connection():
            conn.process_data_events(time_limit=0.1)
            rows = as_json(cli("connections", "list", "--format", "json",
                               "--columns", "name,user,vhost,client_properties.connection_name,peer_host,state"))
            return find(rows, **{"client_properties.connection_name": name})

        found = wait_for(my_connection)
        assert found, "connection never listed"
        cname = found[0]["name"]
        assert found[0]["user"] == "guest" and found[0]["vhost"] == "/" and found[0]["peer_host"] == "127.0.0.1"
        assert any(r["name"] == cname for r in as_json(cli("connections", "list", "--format", "json", "-p", "/")))
        assert cname in ok(cli("connections", "list"))

        def my_channel():
            conn.process_data_events(time_limit=0.1)
            rows = as_json(cli("channels", "list", "--format", "json", "--vhost", "/"))
            return [r for r in rows if r["connection"] == cname and r["consumer_count"] == 1]

        chans = wait_for(my_channel)
        assert chans, "channel never listed"
        assert chans[0]["number"] == 1 and chans[0]["prefetch_count"] == 7 and chans[0]["user"] == "guest"

        def my_consumer():
            conn.process_data_events(time_limit=0.1)
            rows = as_json(cli("consumers", "list", "--format", "json", "--vhost", "/"))
            return find(rows, queue_name=q)

        cons = wait_for(my_consumer)
        assert cons == [{"queue_name": q, "consumer_tag": tag, "channel": chans[0]["name"], "ack_required": True,
                         "prefetch_count": 7, "exclusive": False, "arguments": {"x-priority": 3}}]
        tsv = ok(cli("consumers", "list", "--format", "tsv", "--columns", "queue.name,consumer_tag"))
        assert f"{q}\t{tag}" in tsv.splitlines()

        ok(cli("connections", "close", cname, "--reason", "closed by broker-cli test"))

        def closed():
            try:
                conn.process_data_events(time_limit=0.2)
            except pika.exceptions.AMQPError:
                return True
            return not conn.is_open

        assert wait_for(closed, timeout=10), "connection still open after close"
        fails(cli("connections", "close", cname), EXIT_NOT_FOUND, cname)
    finally:
        if conn.is_open:
            conn.close()


# --------------------------------------------------------------------------- users and permissions


def test_users(cli, cleanup):
    u = uniq("cli-user")
    cleanup(("users", "delete", u))
    ok(cli("users", "add", u, "pw-one", "--tags", "monitoring"))
    fails(cli("users", "add", u, "other"), EXIT_REFUSED, "already exists")
    rows = find(as_json(cli("users", "list", "--format", "json")), name=u)
    assert len(rows) == 1 and tags_list(rows[0]["tags"]) == ["monitoring"]
    assert find([dict(zip(["name", "tags"], r)) for r in table_rows(ok(cli("users", "list")))],
                name=u, tags="monitoring")
    # The new user can log in.
    ok(cli("status", "--user", u, "--password", "pw-one"))
    # set-password keeps the tags.
    ok(cli("users", "set-password", u, "pw-two"))
    fails(cli("status", "--user", u, "--password", "pw-one"), EXIT_CREDENTIALS, u)
    ok(cli("status", "--user", u, "--password", "pw-two"))
    rows = find(as_json(cli("users", "list", "--format", "json")), name=u)
    assert tags_list(rows[0]["tags"]) == ["monitoring"]
    # set-tags keeps the password.
    ok(cli("users", "set-tags", u, "administrator", "management"))
    rows = find(as_json(cli("users", "list", "--format", "json")), name=u)
    assert tags_list(rows[0]["tags"]) == ["administrator", "management"]
    ok(cli("status", "--user", u, "--password", "pw-two"))
    # Without a management tag the login works but the API refuses: not a credentials error.
    ok(cli("users", "set-tags", u))
    rows = find(as_json(cli("users", "list", "--format", "json")), name=u)
    assert tags_list(rows[0]["tags"]) == []
    fails(cli("status", "--user", u, "--password", "pw-two"), EXIT_REFUSED)
    # Password from stdin.
    ok(cli("users", "set-password", u, stdin="pw-three\n"))
    ok(cli("users", "set-tags", u, "monitoring"))
    ok(cli("status", "--user", u, "--password", "pw-three"))
    ok(cli("users", "delete", u))
    assert not find(as_json(cli("users", "list", "--format", "json")), name=u)
    fails(cli("users", "delete", u), EXIT_NOT_FOUND, u)
    fails(cli("users", "set-password", u, "x"), EXIT_NOT_FOUND, u)
    fails(cli("users", "set-tags", u, "x"), EXIT_NOT_FOUND, u)


def test_non_admin_is_refused_not_unauthenticated(cli, cleanup):
    u = uniq("cli-mon")
    cleanup(("users", "delete", u))
    ok(cli("users", "add", u, "pw", "--tags", "monitoring"))
    fails(cli("users", "add", uniq("x"), "pw", "--user", u, "--password", "pw"), EXIT_REFUSED)
    fails(cli("vhosts", "add", uniq("v"), "--user", u, "--password", "pw"), EXIT_REFUSED)


def test_permissions(cli, cleanup):
    v, u = uniq("cli-pv"), uniq("cli-pu")
    cleanup(("users", "delete", u))
    cleanup(("vhosts", "delete", v))
    ok(cli("vhosts", "add", v))
    ok(cli("users", "add", u, "pw", stdin=None))
    ok(cli("permissions", "set", u, "^c", "^w", "^r", "--vhost", v))
    expected = {"user": u, "vhost": v, "configure": "^c", "write": "^w", "read": "^r"}
    assert expected in as_json(cli("permissions", "list", "--format", "json", "--vhost", v))
    assert expected in as_json(cli("permissions", "list", "--format", "json"))
    assert f"{u}\t{v}\t^c\t^w\t^r" in ok(cli("permissions", "list", "--format", "tsv")).splitlines()
    # users list --vhost: the users with permissions there.
    names = [r["name"] for r in as_json(cli("users", "list", "--format", "json", "--vhost", v))]
    assert u in names
    assert u not in [r["name"] for r in as_json(cli("users", "list", "--format", "json", "--vhost", "/"))]
    ok(cli("permissions", "set", u, ".*", "", ".*", "--vhost", v))
    rows = find(as_json(cli("permissions", "list", "--format", "json", "-p", v)), user=u)
    assert rows == [{"user": u, "vhost": v, "configure": ".*", "write": "", "read": ".*"}]
    ok(cli("permissions", "clear", u, "--vhost", v))
    assert not find(as_json(cli("permissions", "list", "--format", "json", "-p", v)), user=u)
    fails(cli("permissions", "clear", u, "--vhost", v), EXIT_NOT_FOUND, u)
    fails(cli("permissions", "set", u, ".*", ".*", ".*", "--vhost", uniq("no-vh")), EXIT_REFUSED)


# --------------------------------------------------------------------------- definitions


def test_definitions_export_import(cli, tmp_path, cleanup):
    defs = as_json(cli("definitions", "export"))
    for key in ("users", "vhosts", "permissions", "queues", "exchanges", "bindings"):
        assert isinstance(defs[key], list), key
    assert any(v["name"] == "/" for v in defs["vhosts"])
    out_file = tmp_path / "defs.json"
    assert str(out_file) in ok(cli("definitions", "export", "--file", str(out_file)))
    assert "queues" in json.loads(out_file.read_text())
    vhost_defs = as_json(cli("definitions", "export", "--vhost", "/"))
    assert isinstance(vhost_defs["queues"], list)

    q, x = uniq("cli-def-q"), uniq("cli-def-x")
    cleanup(("queues", "delete", q))
    cleanup(("exchanges", "delete", x))
    doc = {
        "queues": [{"name": q, "vhost": "/", "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 7}}],
        "exchanges": [{"name": x, "vhost": "/", "type": "fanout", "durable": True, "auto_delete": False,
                       "internal": False, "arguments": {}}],
        "bindings": [{"source": x, "vhost": "/", "destination": q, "destination_type": "queue",
                      "routing_key": "", "arguments": {}}],
    }
    in_file = tmp_path / "import.json"
    in_file.write_text(json.dumps(doc))
    ok(cli("definitions", "import", str(in_file)))
    queues = as_json(cli("queues", "list", "--format", "json", "--columns", "name,durable,arguments"))
    assert {"name": q, "durable": True, "arguments": {"x-max-length": 7}} in queues
    assert find(as_json(cli("exchanges", "list", "--format", "json")), name=x, type="fanout")
    assert find(as_json(cli("bindings", "list", "--format", "json")), source_name=x, destination_name=q)
    exported = as_json(cli("definitions", "export"))
    assert any(e["name"] == q for e in exported["queues"])
    # From stdin, into one vhost.
    ok(cli("queues", "delete", q))
    doc_v = {"queues": [{"name": q, "durable": True, "auto_delete": False, "arguments": {}}]}
    ok(cli("definitions", "import", "-", "--vhost", "/", stdin=json.dumps(doc_v)))
    assert find(as_json(cli("queues", "list", "--format", "json")), name=q)
    # Bad input.
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    fails(cli("definitions", "import", str(bad)), EXIT_OTHER, "not valid JSON")
    fails(cli("definitions", "import", str(tmp_path / "nope.json")), EXIT_OTHER, "nope.json")


def test_declare_a_stream_with_retention(cli, http_url, scratch):
    """The operations guide's example: a stream with size and age limits."""
    from httpapi import Api

    api = Api(http_url)
    q = scratch.queue("cli-stream")
    r = cli("queues", "declare", q, "--type", "stream",
            "--argument", "x-max-length-bytes=10000000000", "--argument", "x-max-age=7D")
    assert r.returncode == 0, r.stderr
    info = api.json(f"/api/queues/%2F/{q}")
    assert info["type"] == "stream" and info["durable"] is True
    assert info["arguments"] == {"x-queue-type": "stream", "x-max-length-bytes": 10000000000,
                                 "x-max-age": "7D"}
