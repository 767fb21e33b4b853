"""Delayed retry with back-off (issue 18): a message a consumer nacks or rejects with
requeue waits out a back-off before it is delivered again (RabbitMQ 4.3's
`x-delayed-retry-type/min/max`, LavinMQ's `x-delayed-retry-min/multiplier/max`, and our
`x-delayed-retry-jitter`), on classic and quorum queues, with the delivery limit and
dead-lettering, counted in the queue's stats, and kept across a kill -9.

The delays are asserted from below (a message never comes back before its time); an
upper bound only where the uncapped delay would be far longer than the cap.
"""

import time

import pika
import pytest

from conftest import connect, pump_until, uniq
from httpapi import Api, eventually, q as path

QUEUE_TYPES = ["classic", "quorum"]
# the broker reads its clock in whole milliseconds
SLACK_MS = 3


def declare(ch, name, queue_type, **args):
    arguments = {"x-queue-type": queue_type}
    arguments.update(args)
    ch.queue_declare(name, durable=True, arguments=arguments)


def nack_loop(conn, ch, queue, rounds, requeue_with="nack"):
    """Consumes `queue`, giving every delivery back (nack or reject with requeue) until
    `rounds` deliveries arrived; returns [(monotonic ms, method, properties)]."""
    seen = []

    def on_message(c, m, p, body):
        seen.append((time.monotonic() * 1000, m, p))
        if len(seen) < rounds:
            if requeue_with == "nack":
                c.basic_nack(m.delivery_tag, requeue=True)
            else:
                c.basic_reject(m.delivery_tag, requeue=True)
        else:
            c.basic_ack(m.delivery_tag)

    ch.basic_qos(prefetch_count=10)
    tag = ch.basic_consume(queue, on_message)
    assert pump_until(conn, lambda: len(seen) == rounds, timeout=20), seen
    ch.basic_cancel(tag)
    return seen


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_linear_back_off_is_waited_out_and_capped(broker, scratch, queue_type):
    c = connect(broker)
    try:
        ch = c.channel()
        name = scratch.queue("retry-linear")
        declare(
            ch, name, queue_type,
            **{"x-delayed-retry-type": "all", "x-delayed-retry-min": 300, "x-delayed-retry-max": 400},
        )
        ch.basic_publish("", name, b"work")
        seen = nack_loop(c, ch, name, 5)
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
        # min(300 x n, 400): 300, 400, 400, 400 (uncapped: 300, 600, 900, 1200)
        for gap, want in zip(gaps, [300, 400, 400, 400]):
            assert gap >= want - SLACK_MS, (gaps, want)
        assert gaps[3] < 1100, f"the cap did not hold: {gaps}"
        first, again = seen[0][1], seen[1][1]
        assert (first.redelivered, again.redelivered) == (False, True)
        # every return counted: x-delivery-count says how often it came back
        counts = [(p.headers or {}).get("x-delivery-count") for _, _, p in seen[1:]]
        assert counts == [1, 2, 3, 4], counts
    finally:
        c.close()


def test_exponential_back_off_with_jitter(broker, scratch):
    c = connect(broker)
    try:
        ch = c.channel()
        name = scratch.queue("retry-exp")
        # LavinMQ's way: the minimum alone turns retry on; a multiplier of 3 and our jitter
        declare(
            ch, name, "classic",
            **{"x-delayed-retry-min": 100, "x-delayed-retry-multiplier": 3, "x-delayed-retry-jitter": 50},
        )
        ch.basic_publish("", name, b"work")
        seen = nack_loop(c, ch, name, 4, requeue_with="reject")
        gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
        # 100 x 3^(n-1), each drawn from its upper half: [50,100], [150,300], [450,900]
        for gap, low in zip(gaps, [50, 150, 450]):
            assert gap >= low - SLACK_MS, (gaps, low)
        assert gaps[2] > gaps[0], gaps
    finally:
        c.close()


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_other_messages_flow_while_one_waits(broker, scratch, queue_type):
    c = connect(broker)
    try:
        ch = c.channel()
        name = scratch.queue("retry-flow")
        declare(ch, name, queue_type, **{"x-delayed-retry-type": "all", "x-delayed-retry-min": 60_000})
        ch.basic_publish("", name, b"poison")
        ch.basic_publish("", name, b"fine")
        got = []

        def on_message(c_, m, p, body):
            got.append(body)
            if body == b"poison":
                c_.basic_nack(m.delivery_tag, requeue=True)
            else:
                c_.basic_ack(m.delivery_tag)

        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(name, on_message)
        assert pump_until(c, lambda: got == [b"poison", b"fine"], timeout=5), got
        # the poison message waits a minute: nothing else arrives meanwhile
        assert not pump_until(c, lambda: len(got) > 2, timeout=0.5), got
        ok = ch.queue_declare(name, passive=True).method
        assert ok.message_count == 0, "a waiting message is not ready"
        # purge takes the waiting message too
        assert ch.queue_purge(name).method.message_count == 1
    finally:
        c.close()


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_the_delivery_limit_dead_letters_after_the_retries(broker, scratch, queue_type):
    c = connect(broker)
    try:
        ch = c.channel()
        name, dead = scratch.queue("retry-limit"), scratch.queue("retry-dead")
        ch.queue_declare(dead, durable=True)
        declare(
            ch, name, queue_type,
            **{
                "x-delayed-retry-type": "failed", "x-delayed-retry-min": 50,
                "x-delivery-limit": 2, "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dead,
            },
        )
        ch.basic_publish("", name, b"poison")
        seen = []

        def on_message(c_, m, p, body):
            seen.append(time.monotonic())
            c_.basic_reject(m.delivery_tag, requeue=True)

        tag = ch.basic_consume(name, on_message)
        assert pump_until(c, lambda: len(seen) == 3, timeout=10), seen
        # the third return is over the limit: dead-lettered, not delayed again
        got = []
        ch2 = c.channel()
        ch2.basic_consume(dead, lambda c_, m, p, body: got.append((p, body)), auto_ack=True)
        assert pump_until(c, lambda: got, timeout=5)
        props, body = got[0]
        assert body == b"poison"
        assert props.headers["x-death"][0]["reason"] == "delivery_limit"
        assert len(seen) == 3
        ch.basic_cancel(tag)
    finally:
        c.close()


def test_waiting_messages_are_counted_in_the_api_and_metrics(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    c = connect(b.port)
    try:
        ch = c.channel()
        name = uniq("retry-stats")
        declare(ch, name, "classic", **{"x-delayed-retry-min": 60_000})
        for i in range(3):
            ch.basic_publish("", name, f"m{i}".encode())
        got = []
        ch.basic_qos(prefetch_count=5)
        ch.basic_consume(name, lambda c_, m, p, body: got.append(m.delivery_tag))
        assert pump_until(c, lambda: len(got) == 3)
        ch.basic_nack(got[1], requeue=True)
        ch.basic_nack(got[2], requeue=True)

        def delayed():
            info = api.json(f"/api/queues/%2F/{path(name)}")
            assert info["messages_delayed"] == 2, info
            return info

        info = eventually(delayed, conns=[c])
        assert (info["messages_ready"], info["messages_unacknowledged"], info["messages"]) == (0, 1, 3)
        metrics = api.get("/metrics").body.decode()
        line = [l for l in metrics.splitlines() if l.startswith("broker_queue_messages_delayed{") and name in l]
        assert line and line[0].endswith(" 2"), line
    finally:
        c.close()


def test_a_policy_turns_retry_on(own_broker_factory):
    b = own_broker_factory()
    api = Api(b.http_url)
    name = uniq("retry-pol")
    api.ok("PUT", f"/api/policies/%2F/{name}", {
        "pattern": f"^{name}$", "apply-to": "queues",
        "definition": {"delayed-retry-type": "all", "delayed-retry-min": 60000},
    })
    bad = api.put(f"/api/policies/%2F/{name}-bad", {
        "pattern": "^x$", "definition": {"delayed-retry-type": "sometimes"},
    })
    assert bad.status == 400 and "is not a valid delayed retry type" in bad.reason(), bad
    c = connect(b.port)
    try:
        ch = c.channel()
        ch.queue_declare(name, durable=True)
        ch.basic_publish("", name, b"m")
        m, _, _ = ch.basic_get(name)
        ch.basic_nack(m.delivery_tag, requeue=True)
        eventually(lambda: api.json(f"/api/queues/%2F/{path(name)}")["messages_delayed"] == 1, conns=[c])
        assert ch.basic_get(name)[0] is None, "the nacked message waits"
        # the policy goes: nothing waits any more
        api.ok("DELETE", f"/api/policies/%2F/{name}")
        assert pump_until(c, lambda: ch.basic_get(name, auto_ack=True)[0] is not None, timeout=5)
    finally:
        c.close()


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_bad_arguments_are_refused_with_406(broker, queue_type):
    cases = [
        ({"x-delayed-retry-type": "sometimes", "x-delayed-retry-min": 10},
         "unknown retry type 'sometimes': expected disabled, all, failed or returned"),
        ({"x-delayed-retry-type": "all"}, "x-delayed-retry-min is required"),
        ({"x-delayed-retry-min": 0}, "invalid arg 'x-delayed-retry-min'"),
        ({"x-delayed-retry-min": 100, "x-delayed-retry-max": 10}, "10 is less than x-delayed-retry-min (100)"),
        ({"x-delayed-retry-min": 100, "x-delayed-retry-jitter": 150}, "150 is not a percentage"),
    ]
    c = connect(broker)
    try:
        for args, text in cases:
            ch = c.channel()
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
                declare(ch, uniq("retry-bad"), queue_type, **args)
            assert e.value.reply_code == 406
            assert text in e.value.reply_text, (args, e.value.reply_text)
    finally:
        c.close()


def confirm_publish(ch, queue, body):
    ch.confirm_delivery()
    ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


@pytest.mark.parametrize("queue_type", QUEUE_TYPES)
def test_a_waiting_message_survives_kill_9(own_broker_factory, queue_type):
    b = own_broker_factory()
    api = Api(b.http_url)
    name = uniq("retry-durable")
    c = connect(b.port)
    ch = c.channel()
    declare(ch, name, queue_type, **{"x-delayed-retry-type": "all", "x-delayed-retry-min": 1500})
    confirm_publish(ch, name, b"keep me")
    m, _, body = ch.basic_get(name)
    assert body == b"keep me"
    ch.basic_nack(m.delivery_tag, requeue=True)
    # the nack is in before the kill: the queue counts the message as waiting (a
    # quorum queue once its log has committed the return, which is what the count
    # after the restart needs; a round trip on the channel does not wait for that)
    eventually(lambda: api.json(f"/api/queues/%2F/{path(name)}")["messages_delayed"] == 1, conns=[c])
    b.proc.kill()
    b.proc.wait(timeout=10)
    b._launch()
    c = connect(b.port)
    try:
        ch = c.channel()
        got = []
        ch.basic_consume(name, lambda c_, m_, p, body_: got.append((m_, p, body_)), auto_ack=True)
        assert pump_until(c, lambda: got, timeout=15), "the waiting message was lost"
        m, props, body = got[0]
        assert body == b"keep me"
        if queue_type == "quorum":
            # the log kept the return: its count survives
            assert m.redelivered and props.headers["x-delivery-count"] >= 1
    finally:
        c.close()
