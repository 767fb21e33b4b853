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
    ap.add_argument("--transient", action="store_true", help="non-durable exchange and queues")
    ap.add_argument("--rate", type=float, default=0, help="operations per second at most (0: as fast as answered)")
    a = ap.parse_args()
    durable = not a.transient
    pause = 1.0 / a.rate if a.rate else 0
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.port))
    ch = conn.channel()
    ch.exchange_declare("storm.topic", "topic", durable=durable)
    ch.queue_declare("storm.target", durable=durable)
    t0 = time.monotonic()
    for i in range(a.bindings):
        ch.queue_bind("storm.target", "storm.topic", f"storm.{i}.#")
        if pause:
            time.sleep(pause)
    t1 = time.monotonic()
    for i in range(a.declares):
        ch.queue_declare(f"storm.q{i}", durable=durable)
        if pause:
            time.sleep(pause)
    for i in range(a.declares):
        ch.queue_delete(f"storm.q{i}")
    t2 = time.monotonic()
    ch.queue_delete("storm.target")
    ch.exchange_delete("storm.topic")
    t3 = time.monotonic()
    print(
        f"{a.bindings} {'durable' if durable else 'transient'} binds: {t1 - t0:.2f} s; "
        f"{a.declares} {'durable' if durable else 'transient'} declares + deletes: {t2 - t1:.2f} s; "
        f"deleting the queue and exchange with {a.bindings} bindings: {t3 - t2:.2f} s"
    )
    conn.close()


if __name__ == "__main__":
    main()
