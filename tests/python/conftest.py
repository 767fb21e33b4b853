"""Starts the broker binary on a free port with its own data dir for the pika suite."""
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pika
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def broker_bin():
    env = os.environ.get("BROKER_BIN")
    if env:
        return env
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "broker"
        if p.exists():
            return str(p)
    raise RuntimeError("broker binary not found: run `cargo build --bin broker` or set BROKER_BIN")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def broker():
    port = free_port()
    data = tempfile.mkdtemp(prefix="broker-pika-")
    proc = subprocess.Popen(
        [broker_bin(), "--listen", f"127.0.0.1:{port}", "--data-dir", data, "--log-level", "warn"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert "listening on" in line, f"broker did not start: {line!r}"
    yield port
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
    shutil.rmtree(data, ignore_errors=True)


def connect(port):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"))
    )


@pytest.fixture
def conn(broker):
    c = connect(broker)
    yield c
    if c.is_open:
        c.close()


def drain(ch, queue, timeout=5.0, expect=None):
    """Gets messages with basic.get until `expect` arrived (or the queue is empty)."""
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            if expect is None or len(out) >= expect:
                break
            time.sleep(0.01)
            continue
        out.append(body)
        if expect is not None and len(out) >= expect:
            break
    return out
