"""Raw sockets: what a non-AMQP client gets."""
import socket
import time


def read_all(s, timeout=5):
    s.settimeout(timeout)
    out = b""
    end = time.time() + timeout
    while time.time() < end:
        try:
            d = s.recv(4096)
        except (socket.timeout, ConnectionResetError):
            break
        if not d:
            break
        out += d
    return out


def test_wrong_protocol_header_gets_ours_back(broker):
    s = socket.create_connection(("127.0.0.1", broker))
    s.sendall(b"AMQP\x01\x01\x00\x09")
    assert read_all(s) == b"AMQP\x00\x00\x09\x01"


def test_http_request_gets_protocol_header(broker):
    s = socket.create_connection(("127.0.0.1", broker))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_all(s) == b"AMQP\x00\x00\x09\x01"
