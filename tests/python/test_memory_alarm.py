"""The memory alarm as RabbitMQ users know it, on what the broker process really uses
(its resident memory), not on a count of message bytes: over `--memory-high-watermark`
publishing connections get connection.blocked "low on memory" and are not read; under
it, connection.unblocked. The watermark is a fraction of the available memory (RAM, or
the cgroup limit when lower; 0.6 by default, RabbitMQ 4's default) or a size, and can
be changed at run time (`broker-cli set-memory-high-watermark`, as `rabbitmqctl
set_vm_memory_high_watermark`)."""
import os
import subprocess
import time

import pika
import pytest

from conftest import uniq
from httpapi import Api, eventually
from test_cli import cli_bin

MiB = 1 << 20


def connect(port, **kw):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=10, **kw))


def node(api):
    return api.json("/api/nodes")[0]


def watch_blocking(conn):
    events = []
    conn.add_on_connection_blocked_callback(lambda _c, f: events.append(("blocked", f.method.reason)))
    conn.add_on_connection_unblocked_callback(lambda _c, _f: events.append(("unblocked", None)))
    return events


def pump(conns, until, timeout=15):
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        for c in conns:
            c.process_data_events(time_limit=0.05)
    return until()


@pytest.mark.ours_only
def test_memory_held_by_unacked_deliveries_raises_the_alarm_and_acks_clear_it(own_broker_factory):
    """Deliveries a consumer holds unacked are no queue's ready bytes, yet they are memory:
    the alarm sees them, and sees them go."""
    b = own_broker_factory("--memory-high-watermark", "160MiB")
    api = Api(b.http_url)
    base = node(api)
    assert base["mem_limit"] == 160 * MiB and base["mem_alarm"] is False, base
    assert base["mem_used"] < 120 * MiB, f"the idle broker already uses {base['mem_used']}"
    q = uniq("mem-hold")
    holder = connect(b.port)
    hch = holder.channel()
    hch.queue_declare(q)
    held = []
    hch.basic_consume(q, lambda ch, m, p, body: held.append(m.delivery_tag), auto_ack=False)
    pub = connect(b.port)
    events = watch_blocking(pub)
    pch = pub.channel()
    body = os.urandom(MiB)
    sent = 0
    while not events and sent < 400:
        pch.basic_publish("", q, body)
        sent += 1
        pump([holder, pub], lambda: len(held) >= sent or events, timeout=5)
    assert events and events[0] == ("blocked", "low on memory"), (events, sent)
    n = node(api)
    assert n["mem_alarm"] is True and n["mem_used"] >= 160 * MiB, n
    assert 'broker_alarm{resource="memory"} 1' in api.get("/metrics").body.decode()
    # what the broker held were unacked deliveries, not ready messages
    assert n["mem_used"] - base["mem_used"] > 100 * MiB
    # acks free the memory: the alarm clears and the publisher is told
    hch.basic_ack(held[-1], multiple=True)
    assert pump([holder, pub], lambda: ("unblocked", None) in events, timeout=20), events
    assert node(api)["mem_alarm"] is False
    pch.basic_publish("", q, b"after")
    assert pump([holder, pub], lambda: len(held) >= sent + 1, timeout=10)
    holder.close()
    pub.close()


def run_cli(url, *args):
    binary = cli_bin()
    if binary is None:
        pytest.skip("broker-cli binary not built (cargo build -p broker-cli) and BROKER_CLI_BIN not set")
    return subprocess.run([binary, *args, "--url", url], capture_output=True, text=True, timeout=30)


@pytest.mark.ours_only
def test_the_watermark_is_set_at_run_time_and_blocks_and_releases_publishers(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    n = node(api)
    assert n["mem_alarm"] is False and n["mem_calculation_strategy"] == "rss", n
    q = uniq("mem-set")
    other = connect(b.port)
    och = other.channel()
    och.queue_declare(q)
    pub = connect(b.port)
    events = watch_blocking(pub)
    pch = pub.channel()
    pch.basic_publish("", q, b"before")

    r = run_cli(b.http_url, "set-memory-high-watermark", "0")
    assert r.returncode == 0, r.stderr
    assert node(api)["mem_alarm"] is True and node(api)["mem_limit"] == 0
    pch.basic_publish("", q, b"held")
    assert pump([pub], lambda: events, timeout=5)
    assert events == [("blocked", "low on memory")]
    time.sleep(0.3)
    for _ in range(5):
        pch.basic_publish("", q, b"held")
    time.sleep(0.5)
    queued = och.queue_declare(q, passive=True).method.message_count
    assert queued <= 3, f"{queued} messages went in during the alarm"
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": q, "payload": "x", "payload_encoding": "string", "properties": {}})
    assert r.status == 503 and "memory alarm" in r.reason(), r

    r = run_cli(b.http_url, "set-memory-high-watermark", "0.6")
    assert r.returncode == 0, r.stderr
    assert pump([pub], lambda: ("unblocked", None) in events, timeout=5), events
    eventually(lambda: och.queue_declare(q, passive=True).method.message_count == 7)
    assert node(api)["mem_limit"] > 0
    other.close()
    pub.close()


@pytest.mark.ours_only
def test_a_bad_watermark_is_refused_with_a_clear_error(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    r = api.put("/api/nodes/broker@localhost/memory-high-watermark", {"limit": "12XB"})
    assert r.status == 400 and "unknown unit" in r.reason(), r
    r = api.put("/api/nodes/broker@localhost/memory-high-watermark", {"nolimit": 1})
    assert r.status == 400, r
    r = api.put("/api/nodes/other@host/memory-high-watermark", {"limit": "0.5"})
    assert r.status == 404, r
    r = run_cli(b.http_url, "set-memory-high-watermark", "lots")
    assert r.returncode != 0 and "is not a size" in r.stderr, r
    assert node(api)["mem_alarm"] is False


@pytest.mark.ours_only
def test_a_watermark_flag_that_cannot_be_read_stops_the_broker_with_a_clear_message(tmp_path):
    from conftest import broker_bin
    r = subprocess.run([broker_bin(), "--memory-high-watermark", "12XB", "--data-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown unit" in r.stderr, r.stderr
