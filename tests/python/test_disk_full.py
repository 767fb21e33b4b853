"""A full disk loses nothing confirmed, and the broker recovers without a restart.

The broker runs on a small tmpfs made for the test (mounted and removed by it; skipped
with a message where mounting is not permitted), with a disk-free limit of one byte so
that the disk really fills before the alarm. One queue ("big") is filled with large
messages first, so that purging it frees whole segment files. Publishers with confirms
on several durable queues then fill the disk: no publish they saw nacked or unanswered
may be counted, every one they saw confirmed must survive a kill -9; they are nacked or
blocked; a consumer on another queue is still served; purging "big" frees the space and
a new publish is confirmed without a restart."""
import os
import shutil
import subprocess
import tempfile
import time

import pika
import pytest

from conftest import BrokerProcess, external_port

QUEUES = ["df-a", "df-b", "df-c"]
BODY = 64 * 1024


def body(queue, i):
    head = f"{queue}:{i}:".encode()
    return head + bytes([i % 251]) * (BODY - len(head))


def connect(port, **kw):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1, socket_timeout=5, **kw))


class TmpfsBroker(BrokerProcess):
    """A broker whose data dir is on the given filesystem."""

    def __init__(self, data_dir, extra_args=()):
        self._dir = data_dir
        super().__init__(extra_args)

    def _launch(self):
        self.data_dir = self._dir
        super()._launch()


@pytest.fixture
def tmpfs():
    if external_port() is not None:
        pytest.skip("needs a broker process started by the suite")
    mnt = tempfile.mkdtemp(prefix="broker-diskfull-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=72m", "tmpfs", mnt],
                       capture_output=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt])
        shutil.rmtree(mnt, ignore_errors=True)


def publish_until_full(port):
    """Publishes with confirms round-robin on QUEUES until every publisher is blocked or
    nacked; returns (confirmed ids per queue, nacked count, blocked count)."""
    confirmed = {q: [] for q in QUEUES}
    nacked = 0
    blocked = []
    pubs = {}
    for q in QUEUES:
        c = connect(port, blocked_connection_timeout=3)
        c.add_on_connection_blocked_callback(lambda _c, f, q=q: blocked.append(q))
        ch = c.channel()
        ch.confirm_delivery()
        pubs[q] = (c, ch)
    i = 0
    deadline = time.monotonic() + 120
    while pubs and time.monotonic() < deadline:
        i += 1
        for q in list(pubs):
            c, ch = pubs[q]
            try:
                ch.basic_publish("", q, body(q, i), pika.BasicProperties(delivery_mode=2),
                                 mandatory=True)
                confirmed[q].append(i)
            except pika.exceptions.NackError:
                nacked += 1
                if nacked > 30:
                    pubs.pop(q)
            except (pika.exceptions.AMQPError, OSError):
                # blocked past the timeout, or closed: that publish is unconfirmed
                pubs.pop(q)
    for c, _ in pubs.values():
        try:
            c.close()
        except Exception:
            pass
    return confirmed, nacked, blocked


@pytest.mark.ours_only
def test_a_full_disk_loses_nothing_confirmed_and_recovers_without_a_restart(tmpfs):
    b = TmpfsBroker(os.path.join(tmpfs, "data"), ("--disk-free-limit", "1"))
    try:
        admin = connect(b.port)
        ach = admin.channel()
        for q in QUEUES + ["df-big", "df-side"]:
            ach.queue_declare(q, durable=True)
        ach.confirm_delivery()
        for i in range(3):
            ach.basic_publish("", "df-side", f"side-{i}".encode(),
                              pika.BasicProperties(delivery_mode=2))
        # 40 MiB in "big": whole segment files that a purge frees
        for i in range(40):
            ach.basic_publish("", "df-big", bytes(1 << 20), pika.BasicProperties(delivery_mode=2))
        admin.close()

        confirmed, nacked, blocked = publish_until_full(b.port)
        total = sum(len(v) for v in confirmed.values())
        print(f"confirmed {total}, nacked {nacked}, blocked {blocked}")
        assert nacked > 0 or blocked, "the disk filled but no publisher was nacked or blocked"
        assert total > 0

        # the broker still serves a consumer of another queue
        side = connect(b.port)
        sch = side.channel()
        got = []
        sch.basic_consume("df-side", lambda ch, m, p, bd: (got.append(bd), ch.basic_ack(m.delivery_tag)))
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            side.process_data_events(time_limit=0.2)
        assert got == [b"side-0", b"side-1", b"side-2"]
        # purging frees the space
        sch.queue_purge("df-big")
        side.close()

        # publishing resumes without a restart: a new publish is confirmed
        deadline = time.monotonic() + 60
        resumed = False
        n = 0
        while not resumed and time.monotonic() < deadline:
            n += 1
            try:
                c = connect(b.port, blocked_connection_timeout=2)
                ch = c.channel()
                ch.confirm_delivery()
                ch.basic_publish("", QUEUES[0], body(QUEUES[0], 100000 + n),
                                 pika.BasicProperties(delivery_mode=2))
                confirmed[QUEUES[0]].append(100000 + n)
                resumed = True
                c.close()
            except (pika.exceptions.AMQPError, OSError):
                time.sleep(0.5)
        assert resumed, "publishing did not resume after the purge\n" + b.log_tail()

        # kill -9 and restart on the same dir: every confirmed message is there
        b.proc.kill()
        b.proc.wait(timeout=10)
        b._launch()
        c = connect(b.port)
        ch = c.channel()
        for q in QUEUES:
            seen = set()
            while True:
                m, _props, bd = ch.basic_get(q, auto_ack=True)
                if m is None:
                    break
                qq, i, _ = bd.split(b":", 2)
                assert qq.decode() == q
                assert bd == body(q, int(i)), f"damaged body in {q}"
                seen.add(int(i))
            missing = set(confirmed[q]) - seen
            assert not missing, f"{q}: confirmed messages lost: {sorted(missing)[:10]}"
        c.close()
    finally:
        b.terminate()
        b.log.close()
