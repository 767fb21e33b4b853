"""Resource alarms as RabbitMQ users know them: below `--disk-free-limit` free bytes on
the data dir's filesystem, publishing connections are blocked (connection.blocked "low on
disk" to clients that asked, and their sockets not read) while everything else goes on;
`/api/nodes` and `/metrics` show the alarm, and an HTTP publish gets 503.

The limit here is set above any real disk's free space (10^18 bytes), so the alarm is on
from the first sample; a second broker with the default limit shows it off."""
import time

import pika
import pytest

from conftest import uniq
from httpapi import Api

HUGE = str(10**18)


def connect(port, **kw):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, **kw))


@pytest.mark.ours_only
def test_the_disk_alarm_blocks_publishers_and_shows_in_the_api(own_broker_factory):
    b = own_broker_factory("--disk-free-limit", HUGE)
    api = Api(b.http_url)
    node = api.json("/api/nodes")[0]
    assert node["disk_free_alarm"] is True and node["mem_alarm"] is False, node
    assert node["disk_free_limit"] == 10**18 and node["disk_free"] < 10**18, node
    metrics = api.get("/metrics").body.decode()
    assert 'broker_alarm{resource="disk"} 1' in metrics
    assert 'broker_alarm{resource="memory"} 0' in metrics

    # a publisher is told and not read; declares, gets and the API go on
    q = uniq("disk-alarm")
    other = connect(b.port)
    och = other.channel()
    och.queue_declare(q)
    blocked = []
    pub = connect(b.port)
    pub.add_on_connection_blocked_callback(lambda _c, frame: blocked.append(frame.method.reason))
    pch = pub.channel()
    pch.basic_publish("", q, b"held")
    deadline = time.monotonic() + 5
    while not blocked and time.monotonic() < deadline:
        pub.process_data_events(time_limit=0.1)
    assert blocked == ["low on disk"]
    # the publish that met the alarm went in if all its frames came in one read, and
    # the read already under way may bring one more (RabbitMQ too blocks only from the
    # next read on); a body still on its way is held with its connection (a partly
    # received message is memory the client makes the broker keep); then nothing
    pch.basic_publish("", q, b"held")
    time.sleep(0.5)
    before = och.queue_declare(q, passive=True).method.message_count
    assert before <= 2
    for _ in range(10):
        pch.basic_publish("", q, b"held")
    time.sleep(0.5)
    assert och.queue_declare(q, passive=True).method.message_count == before
    if before:
        assert och.basic_get(q, auto_ack=True)[2] == b"held"
    r = api.post(f"/api/exchanges/%2F/amq.default/publish",
                 {"routing_key": q, "payload": "x", "payload_encoding": "string", "properties": {}})
    assert r.status == 503 and "disk alarm" in r.reason(), r
    other.close()


@pytest.mark.ours_only
def test_the_default_disk_limit_leaves_publishers_alone(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    node = api.json("/api/nodes")[0]
    assert node["disk_free_alarm"] is False and node["disk_free_limit"] == 50_000_000, node
    assert 'broker_alarm{resource="disk"} 0' in api.get("/metrics").body.decode()
    c = connect(b.port)
    ch = c.channel()
    q = uniq("disk-ok")
    ch.queue_declare(q)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"m")
    assert ch.basic_get(q, auto_ack=True)[2] == b"m"
    c.close()
