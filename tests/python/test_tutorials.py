"""The six RabbitMQ tutorials (https://www.rabbitmq.com/getstarted.html) as tests,
with assertions on exactly what arrives where.

Queue and exchange names are the tutorials' own; each test starts by emptying what an
earlier run could have left behind, so the suite also runs against a long-lived broker.
"""
import threading
import uuid

import pika

from conftest import bodies, connect, get_n, pump_until, ready_count


def fresh_queue(ch, name, **kw):
    """Declares the queue (creating it if needed) and purges what an earlier run left."""
    ch.queue_declare(name, **kw)
    ch.queue_purge(name)


# --------------------------------------------------------------------------- 1. hello world


def test_hello_world(conn, connect_more):
    # send.py
    send = conn.channel()
    fresh_queue(send, "hello")
    send.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")

    # receive.py, on its own connection
    rconn = connect_more()
    recv = rconn.channel()
    recv.queue_declare("hello")
    got = []

    def callback(ch, method, properties, body):
        got.append((method.routing_key, method.exchange, method.redelivered, body))

    recv.basic_consume(queue="hello", on_message_callback=callback, auto_ack=True)
    assert pump_until(rconn, lambda: len(got) >= 1)
    assert got == [("hello", "", False, b"Hello World!")]
    # auto_ack: nothing is left behind, nothing is waiting for an ack
    assert pump_until(rconn, lambda: ready_count(send, "hello") == 0)
    send.queue_delete("hello")


# --------------------------------------------------------------------------- 2. work queues


def test_work_queues_round_robin(conn, connect_more):
    """Without a prefetch limit, consumers take turns: one gets 0,2,4,..., the other 1,3,5,..."""
    ch = conn.channel()
    fresh_queue(ch, "task_queue", durable=True)
    workers = [connect_more() for _ in range(2)]
    got = [[], []]
    for idx, w in enumerate(workers):
        wch = w.channel()
        wch.queue_declare("task_queue", durable=True)

        def cb(c, method, props, body, idx=idx):
            got[idx].append(body)
            c.basic_ack(method.delivery_tag)

        wch.basic_consume("task_queue", cb)
    n = 10
    for i in range(n):
        ch.basic_publish("", "task_queue", f"task {i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert pump_until(workers, lambda: len(got[0]) + len(got[1]) == n)
    evens = [f"task {i}".encode() for i in range(0, n, 2)]
    odds = [f"task {i}".encode() for i in range(1, n, 2)]
    assert sorted([got[0], got[1]]) == sorted([evens, odds]), got
    assert ready_count(ch, "task_queue") == 0
    ch.queue_delete("task_queue")


def test_work_queues_fair_dispatch(conn, connect_more):
    """prefetch_count=1 + manual acks: a busy worker (holding an unacked task) gets nothing
    more; the other worker takes every remaining task; durable queue, persistent messages."""
    ch = conn.channel()
    fresh_queue(ch, "task_queue", durable=True)
    declared = ch.queue_declare("task_queue", durable=True, passive=True)
    assert declared.method.queue == "task_queue"

    busy_conn, fast_conn = connect_more(), connect_more()
    busy, fast = busy_conn.channel(), fast_conn.channel()
    busy_got, fast_got = [], []
    for wch in (busy, fast):
        wch.queue_declare("task_queue", durable=True)
        wch.basic_qos(prefetch_count=1)

    def on_busy(c, method, props, body):
        busy_got.append((method, props, body))  # never acked while "busy"

    def on_fast(c, method, props, body):
        fast_got.append((method, props, body))
        c.basic_ack(delivery_tag=method.delivery_tag)

    busy.basic_consume("task_queue", on_busy)
    fast.basic_consume("task_queue", on_fast)

    n = 8
    sent = [("task " + "." * i).encode() for i in range(n)]
    for body in sent:
        ch.basic_publish("", "task_queue", body, pika.BasicProperties(delivery_mode=2))

    both = [busy_conn, fast_conn]
    assert pump_until(both, lambda: len(busy_got) + len(fast_got) == n), (len(busy_got), len(fast_got))
    # the busy worker holds exactly one unacked task: prefetch_count=1 keeps the rest from it
    assert len(busy_got) == 1
    assert len(fast_got) == n - 1
    assert sorted(b for _, _, b in busy_got + fast_got) == sorted(sent)
    for method, props, body in busy_got + fast_got:
        assert props.delivery_mode == 2
        assert method.redelivered is False
    assert ready_count(ch, "task_queue") == 0

    # more work while the busy worker still holds its task: all of it goes to the fast one
    for i in range(3):
        ch.basic_publish("", "task_queue", f"late {i}".encode(), pika.BasicProperties(delivery_mode=2))
    assert pump_until(both, lambda: len(fast_got) == n - 1 + 3)
    assert len(busy_got) == 1
    assert [b for _, _, b in fast_got[-3:]] == [b"late 0", b"late 1", b"late 2"]

    # the busy worker acks and becomes available again
    busy.basic_ack(busy_got[0][0].delivery_tag)
    ch.basic_publish("", "task_queue", b"after ack", pika.BasicProperties(delivery_mode=2))
    assert pump_until(both, lambda: len(busy_got) + len(fast_got) == n + 4)
    assert ready_count(ch, "task_queue") == 0
    ch.queue_delete("task_queue")


def test_work_queue_unacked_task_goes_to_other_worker(conn, connect_more):
    """A worker that dies with an unacked task: the task is redelivered to another worker."""
    ch = conn.channel()
    fresh_queue(ch, "task_queue", durable=True)
    dying = connect_more()
    dch = dying.channel()
    dch.basic_qos(prefetch_count=1)
    got = []
    dch.basic_consume("task_queue", lambda c, m, p, b: got.append(b))
    ch.basic_publish("", "task_queue", b"important", pika.BasicProperties(delivery_mode=2))
    assert pump_until(dying, lambda: got == [b"important"])
    dying.close()

    (method, props, body), = get_n(ch, "task_queue", 1, auto_ack=False)
    assert body == b"important" and method.redelivered is True and props.delivery_mode == 2
    ch.basic_ack(method.delivery_tag)
    ch.queue_delete("task_queue")


# --------------------------------------------------------------------------- 3. publish/subscribe


def test_publish_subscribe(conn, connect_more):
    ch = conn.channel()
    ch.exchange_declare(exchange="logs", exchange_type="fanout")
    # nobody is bound yet: this one is dropped
    ch.basic_publish(exchange="logs", routing_key="", body=b"lost")

    subs = []
    for _ in range(3):
        c = connect_more()
        sch = c.channel()
        result = sch.queue_declare(queue="", exclusive=True)
        q = result.method.queue
        assert q.startswith("amq.gen-"), q
        assert result.method.message_count == 0 and result.method.consumer_count == 0
        sch.queue_bind(exchange="logs", queue=q)
        got = []
        sch.basic_consume(q, lambda c_, m, p, b, got=got: got.append((m.exchange, m.routing_key, b)), auto_ack=True)
        subs.append((c, sch, q, got))
    assert len({q for _, _, q, _ in subs}) == 3, "server-named queues must be distinct"

    sent = [f"log {i}".encode() for i in range(5)]
    for i, body in enumerate(sent):
        ch.basic_publish(exchange="logs", routing_key=f"ignored-{i}", body=body)
    conns = [c for c, _, _, _ in subs]
    assert pump_until(conns, lambda: all(len(g) >= len(sent) for *_, g in subs))
    for _, _, _, got in subs:
        # every subscriber gets every message once, in order; fanout ignores the routing key
        assert got == [("logs", f"ignored-{i}", b) for i, b in enumerate(sent)]

    # the exclusive queues go away with their connection
    c0, _, q0, _ = subs[0]
    c0.close()
    probe = conn.channel()
    try:
        probe.queue_declare(q0, passive=True)
        raise AssertionError(f"exclusive queue {q0} survived its connection")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404


# --------------------------------------------------------------------------- 4. routing


def test_routing(conn):
    ch = conn.channel()
    ch.exchange_declare(exchange="direct_logs", exchange_type="direct")
    wanted = {
        "errors-only": ["error"],
        "everything": ["info", "warning", "error"],
        "warnings": ["warning"],
    }
    queues = {}
    for name, severities in wanted.items():
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        for severity in severities:
            ch.queue_bind(exchange="direct_logs", queue=q, routing_key=severity)
        queues[name] = q

    published = ["info", "warning", "error", "debug", "error", "info", "critical", "Error"]
    for i, severity in enumerate(published):
        ch.basic_publish(exchange="direct_logs", routing_key=severity, body=f"{i}:{severity}".encode())

    for name, severities in wanted.items():
        expected = [f"{i}:{s}".encode() for i, s in enumerate(published) if s in severities]
        got = get_n(ch, queues[name], len(expected))
        assert [b for _, _, b in got] == expected, name
        assert [m.routing_key for m, _, _ in got] == [b.decode().split(":")[1] for b in expected]
        # exactly its keys: nothing more arrives (direct matching is exact and case sensitive)
        assert ready_count(ch, queues[name]) == 0, name


# --------------------------------------------------------------------------- 5. topics

TOPIC_KEYS = [
    "quick.orange.rabbit",
    "lazy.orange.elephant",
    "quick.orange.fox",
    "lazy.brown.fox",
    "lazy.pink.rabbit",
    "quick.brown.fox",
    "orange",
    "quick.orange.new.rabbit",
    "lazy.orange.new.rabbit",
    "quick.orange.male.rabbit",
    "lazy",
    "",
]


def test_topics(conn):
    ch = conn.channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    bindings = {
        "Q1": ["*.orange.*"],
        "Q2": ["*.*.rabbit", "lazy.#"],
        "orange": ["*.orange.*"],
        "rabbit": ["*.*.rabbit"],
        "lazy": ["lazy.#"],
        "all": ["#"],
        "exact": ["quick.brown.fox"],
        "hash-rabbit": ["#.rabbit"],
        "orange-anywhere": ["#.orange.#"],
    }
    expected = {
        "Q1": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        # lazy.pink.rabbit matches both of Q2's bindings but is delivered once
        "Q2": ["quick.orange.rabbit", "lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit",
               "lazy.orange.new.rabbit", "lazy"],
        "orange": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
        "rabbit": ["quick.orange.rabbit", "lazy.pink.rabbit"],
        "lazy": ["lazy.orange.elephant", "lazy.brown.fox", "lazy.pink.rabbit", "lazy.orange.new.rabbit", "lazy"],
        "all": TOPIC_KEYS,
        "exact": ["quick.brown.fox"],
        "hash-rabbit": ["quick.orange.rabbit", "lazy.pink.rabbit", "quick.orange.new.rabbit",
                        "lazy.orange.new.rabbit", "quick.orange.male.rabbit"],
        "orange-anywhere": ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox", "orange",
                            "quick.orange.new.rabbit", "lazy.orange.new.rabbit", "quick.orange.male.rabbit"],
    }
    queues = {}
    for name, patterns in bindings.items():
        q = ch.queue_declare(queue="", exclusive=True).method.queue
        for p in patterns:
            ch.queue_bind(exchange="topic_logs", queue=q, routing_key=p)
        queues[name] = q

    for key in TOPIC_KEYS:
        ch.basic_publish(exchange="topic_logs", routing_key=key, body=f"<{key}>".encode())

    for name, keys in expected.items():
        got = bodies(ch, queues[name], len(keys))
        assert got == [f"<{k}>".encode() for k in keys], name
        assert ready_count(ch, queues[name]) == 0, f"{name} got more than {keys}"


def test_topics_tutorial_sets(conn):
    """The tutorial's question list: which of Q1 (*.orange.*) and Q2 (*.*.rabbit, lazy.#)
    gets each key."""
    ch = conn.channel()
    ch.exchange_declare(exchange="topic_logs", exchange_type="topic")
    q1 = ch.queue_declare("", exclusive=True).method.queue
    q2 = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(q1, "topic_logs", "*.orange.*")
    ch.queue_bind(q2, "topic_logs", "*.*.rabbit")
    ch.queue_bind(q2, "topic_logs", "lazy.#")
    cases = {
        "quick.orange.rabbit": {q1, q2},
        "lazy.orange.elephant": {q1, q2},
        "quick.orange.fox": {q1},
        "lazy.brown.fox": {q2},
        "lazy.pink.rabbit": {q2},
        "quick.brown.fox": set(),
        "orange": set(),
        "quick.orange.new.rabbit": set(),
        "lazy.orange.new.rabbit": {q2},
    }
    for key, dests in cases.items():
        ch.basic_publish("topic_logs", key, key.encode())
        for q in (q1, q2):
            if q in dests:
                (m, _, body), = get_n(ch, q, 1)
                assert body == key.encode() and m.routing_key == key
            assert ready_count(ch, q) == 0, (key, q == q1)


# --------------------------------------------------------------------------- 6. RPC


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


class RpcServer(threading.Thread):
    """rpc_server.py on its own connection and thread (pika connections are per-thread)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.error = None
        self.served = 0

    def run(self):
        try:
            connection = connect(self.port)
            channel = connection.channel()
            channel.queue_declare(queue="rpc_queue")
            channel.queue_purge("rpc_queue")
            channel.basic_qos(prefetch_count=1)

            def on_request(ch, method, props, body):
                n = int(body)
                ch.basic_publish(
                    exchange="",
                    routing_key=props.reply_to,
                    properties=pika.BasicProperties(correlation_id=props.correlation_id),
                    body=str(fib(n)).encode(),
                )
                ch.basic_ack(delivery_tag=method.delivery_tag)
                self.served += 1

            channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)
            self.ready.set()
            while not self.stop.is_set():
                connection.process_data_events(time_limit=0.05)
            channel.queue_delete("rpc_queue")
            connection.close()
        except BaseException as e:  # surfaced by the test
            self.error = e
            self.ready.set()


class FibonacciRpcClient:
    def __init__(self, port):
        self.connection = connect(port)
        self.channel = self.connection.channel()
        result = self.channel.queue_declare(queue="", exclusive=True)
        self.callback_queue = result.method.queue
        self.channel.basic_consume(queue=self.callback_queue, on_message_callback=self.on_response, auto_ack=True)
        self.responses = {}

    def on_response(self, ch, method, props, body):
        self.responses[props.correlation_id] = body

    def send(self, n):
        corr_id = str(uuid.uuid4())
        self.channel.basic_publish(
            exchange="",
            routing_key="rpc_queue",
            properties=pika.BasicProperties(reply_to=self.callback_queue, correlation_id=corr_id),
            body=str(n).encode(),
        )
        return corr_id

    def wait(self, corr_id, timeout=5.0):
        assert pump_until(self.connection, lambda: corr_id in self.responses, timeout), "no RPC reply"
        return int(self.responses.pop(corr_id))

    def call(self, n):
        return self.wait(self.send(n))


def test_rpc(broker):
    server = RpcServer(broker)
    server.start()
    assert server.ready.wait(5)
    assert server.error is None, server.error
    client = FibonacciRpcClient(broker)
    try:
        # one call at a time, as in the tutorial
        assert client.call(30) == 832040
        for n in (0, 1, 2, 10):
            assert client.call(n) == fib(n)
        # several in flight: each reply matches its request by correlation id
        pending = {client.send(n): n for n in range(20, 40)}
        for corr_id, n in pending.items():
            assert client.wait(corr_id) == fib(n)
        assert client.responses == {}, "replies nobody asked for"
    finally:
        client.connection.close()
        server.stop.set()
        server.join(5)
    assert server.error is None, server.error
    assert server.served == 25  # read after join: the thread counts after it has replied
