"""Topology storm for scripts/bench-topology-storm.sh: many bindings on one exchange and
a storm of durable declares and deletes, from one connection, as fast as the broker
answers; prints how long each phase took. Used to measure what it costs *other*
clients (a fixed-rate 1p1c flow's p99, run beside it by the wrapper script)."""

import argparse
import time

import pika


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=5672)
    ap.add_argument("--bindings", type=int, default=10000)
    ap.add_argument("--declares", type=int, default=2000)
    a = ap.parse_args()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port))
    ch = conn.channel()
    ch.exchange_declare("storm.topic", "topic", durable=True)
    ch.queue_declare("storm.target", durable=True)
    t0 = time.monotonic()
    for i in range(a.bindings):
        ch.queue_bind("storm.target", "storm.topic", f"storm.{i}.#")
    t1 = time.monotonic()
    for i in range(a.declares):
        ch.queue_declare(f"storm.q{i}", durable=True)
    for i in range(a.declares):
        ch.queue_delete(f"storm.q{i}")
    t2 = time.monotonic()
    ch.queue_delete("storm.target")
    ch.exchange_delete("storm.topic")
    t3 = time.monotonic()
    print(
        f"{a.bindings} durable binds: {t1 - t0:.2f} s; "
        f"{a.declares} durable declares + deletes: {t2 - t1:.2f} s; "
        f"deleting the queue and exchange with {a.bindings} bindings: {t3 - t2:.2f} s"
    )
    conn.close()


if __name__ == "__main__":
    main()
