"""The hostile test server itself: usable from synchronous code, and responsive while streaming a huge body."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.support.hostile import PVE_VERSION, HostileServer, huge_body, json_data


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer("127.0.0.9") as s:  # its own event loop, in a daemon thread
        yield s


def connect(server: HostileServer) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cadata=server.ca_pem)
    raw = socket.create_connection((server.host, server.port), timeout=10)  # hang guard only
    return ctx.wrap_socket(raw, server_hostname=server.host)


def get(sock: ssl.SSLSocket, path: str) -> None:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: test\r\n\r\n".encode())


def test_it_answers_from_its_own_thread_and_records_requests(server: HostileServer) -> None:
    server.set("/api2/json/version", json_data(PVE_VERSION))
    with connect(server) as sock:
        get(sock, "/api2/json/version?x=1")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert [(m, t, h["authorization"]) for m, t, h in server.requests] == [("GET", "/api2/json/version?x=1", "test")]
    assert server.connections == server.handshakes == 1


def test_a_client_not_reading_a_huge_body_does_not_hold_up_the_others(server: HostileServer) -> None:
    server.set("/api2/json/huge", huge_body(1 << 30))
    server.set("/api2/json/version", json_data(PVE_VERSION))
    with connect(server) as stalled:
        get(stalled, "/api2/json/huge")
        assert stalled.recv(64).startswith(b"HTTP/1.1 200")  # streaming has begun; now nothing more is read
        with connect(server) as other:
            get(other, "/api2/json/version")
            answer = b""
            while b"8.4.1" not in answer:
                chunk = other.recv(4096)
                assert chunk, "the connection closed before the answer"
                answer += chunk
