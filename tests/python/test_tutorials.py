"""The six RabbitMQ tutorials, as tests with assertions on what arrives."""
import threading
import uuid

import pika

from conftest import connect, drain


def test_hello_world(conn):
    ch = conn.channel()
    ch.queue_declare("hello")
    ch.basic_publish("", "hello", b"Hello World!")
    got = []

    def cb(ch_, method, props, body):
        got.append(body)
        ch_.stop_consuming()

    ch.basic_consume("hello", cb, auto_ack=True)
    conn.call_later(5, ch.stop_consuming)
    ch.start_consuming()
    assert got == [b"Hello World!"]


def test_work_queues_fair_dispatch(broker):
    pub = connect(broker)
    ch = pub.channel()
    ch.queue_declare("task_queue", durable=True)
    for i in range(10):
        ch.basic_publish("", "task_queue", f"task {i}".encode(), pika.BasicProperties(delivery_mode=2))
    workers = [connect(broker) for _ in range(2)]
    seen = {0: [], 1: []}
    chans = []
    for idx, w in enumerate(workers):
        wch = w.channel()
        wch.basic_qos(prefetch_count=1)
        chans.append(wch)
    # each worker takes one message at a time and acks it; dispatch alternates
    for _ in range(5):
        for idx, wch in enumerate(chans):
            method, props, body = wch.basic_get("task_queue")
            assert method is not None
            assert props.delivery_mode == 2
            seen[idx].append(body)
            wch.basic_ack(method.delivery_tag)
    assert len(seen[0]) == len(seen[1]) == 5
    assert sorted(seen[0] + seen[1]) == sorted(f"task {i}".encode() for i in range(10))
    # with consumers and prefetch 1 a worker holding an unacked task gets no more
    for i in range(4):
        ch.basic_publish("", "task_queue", f"c{i}".encode(), pika.BasicProperties(delivery_mode=2))
    slow_got, fast_got = [], []
    chans[0].basic_consume("task_queue", lambda c, m, p, b: slow_got.append((m, b)))
    workers[0].process_data_events(time_limit=0.3)
    assert len(slow_got) == 1, "prefetch_count=1 must hold back further tasks"

    def fast(c, m, p, b):
        fast_got.append(b)
        c.basic_ack(m.delivery_tag)

    chans[1].basic_consume("task_queue", fast)
    for _ in range(20):
        workers[1].process_data_events(time_limit=0.1)
        if len(fast_got) == 3:
            break
    assert len(fast_got) == 3
    chans[0].basic_ack(slow_got[0][0].delivery_tag)
    for c in workers + [pub]:
        c.close()


def test_publish_subscribe(broker):
    pub = connect(broker)
    ch = pub.channel()
    ch.exchange_declare("logs", "fanout")
    subs = []
    for _ in range(3):
        c = connect(broker)
        sch = c.channel()
        q = sch.queue_declare("", exclusive=True).method.queue
        assert q.startswith("amq.gen-")
        sch.queue_bind(q, "logs")
        subs.append((c, sch, q))
    for i in range(3):
        ch.basic_publish("logs", "", f"log {i}".encode())
    for c, sch, q in subs:
        assert drain(sch, q, expect=3) == [b"log 0", b"log 1", b"log 2"]
        c.close()
    pub.close()


def test_routing(conn):
    ch = conn.channel()
    ch.exchange_declare("direct_logs", "direct")
    queues = {}
    for name, sevs in {"errors": ["error"], "all": ["info", "warning", "error"]}.items():
        q = ch.queue_declare("", exclusive=True).method.queue
        for s in sevs:
            ch.queue_bind(q, "direct_logs", s)
        queues[name] = q
    for s in ["info", "warning", "error", "debug"]:
        ch.basic_publish("direct_logs", s, s.encode())
    assert drain(ch, queues["errors"], expect=1) == [b"error"]
    assert drain(ch, queues["all"], expect=3) == [b"info", b"warning", b"error"]


def test_topics(conn):
    ch = conn.channel()
    ch.exchange_declare("topic_logs", "topic")
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, "topic_logs", "*.orange.*")
    ch.queue_bind(q2, "topic_logs", "*.*.rabbit")
    ch.queue_bind(q2, "topic_logs", "lazy.#")
    keys = ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "lazy.brown.fox",
            "lazy.pink.rabbit", "quick.brown.fox", "orange", "quick.orange.new.rabbit",
            "lazy.orange.new.rabbit"]
    for k in keys:
        ch.basic_publish("topic_logs", k, k.encode())
    assert drain(ch, q1, expect=3) == [b"quick.orange.rabbit", b"lazy.orange.elephant", b"quick.orange.fox"]
    assert drain(ch, q2, expect=5) == [b"quick.orange.rabbit", b"lazy.orange.elephant", b"lazy.brown.fox",
                                       b"lazy.pink.rabbit", b"lazy.orange.new.rabbit"]


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def test_rpc(broker):
    server = connect(broker)
    sch = server.channel()
    sch.queue_declare("rpc_queue")
    sch.basic_qos(prefetch_count=1)

    def on_request(c, method, props, body):
        n = int(body)
        c.basic_publish("", props.reply_to, str(fib(n)).encode(),
                        pika.BasicProperties(correlation_id=props.correlation_id))
        c.basic_ack(method.delivery_tag)

    sch.basic_consume("rpc_queue", on_request)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            server.process_data_events(time_limit=0.05)

    t = threading.Thread(target=serve)
    t.start()
    try:
        client = connect(broker)
        cch = client.channel()
        callback_queue = cch.queue_declare("", exclusive=True).method.queue
        responses = {}

        def on_response(c, method, props, body):
            responses[props.correlation_id] = int(body)

        cch.basic_consume(callback_queue, on_response, auto_ack=True)
        ids = {}
        for n in (5, 10, 20):
            corr = str(uuid.uuid4())
            ids[corr] = n
            cch.basic_publish("", "rpc_queue", str(n).encode(),
                              pika.BasicProperties(reply_to=callback_queue, correlation_id=corr))
        for _ in range(100):
            client.process_data_events(time_limit=0.05)
            if len(responses) == 3:
                break
        assert responses == {corr: fib(n) for corr, n in ids.items()}
        client.close()
    finally:
        stop.set()
        t.join()
        server.close()
