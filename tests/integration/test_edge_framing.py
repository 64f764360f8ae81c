"""Framing at the edge: what a client sends and what an upstream answers can never
desynchronise a connection, and a body the gateway cannot read exactly is refused
before anything is forwarded."""

from __future__ import annotations

import socket

import pytest

from .abuse import read_until_closed
from .support import LOOPBACK, Gateway, assert_problem, http_request
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration


def _exchange(port: int, payload: bytes, *, half_close: bool = False) -> bytes:
    """Send raw bytes, read everything until the server closes."""
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_until_closed(sock, within=10)


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_an_upstream_answer_with_both_framings_is_relayed_by_its_chunks(
    gateway: Gateway, token: str
) -> None:
    """RFC 9112 §6.3: Transfer-Encoding overrides Content-Length. Relayed with the
    upstream's Content-Length: 5, the client read 5 bytes and took the rest of the body
    for the start of the next response."""
    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as sock:
        first = f"GET /api/te-and-length/{token} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        second = f"GET /api/ok/{token}-next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sock.sendall(first)
        data = b""
        while b"0\r\n\r\n" not in data and b"\r\n\r\n" not in data.partition(b"\r\n\r\n")[2]:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
            if b"hello world, all chunks" in data:
                break
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"content-length" not in head.lower(), head
        assert head.startswith(b"HTTP/1.1 200"), head
        # read the first answer to its end, then ask again on the same connection
        while b"0\r\n\r\n" not in rest:
            piece = sock.recv(65536)
            assert piece, rest
            rest += piece
        body = b""
        remaining = rest
        while True:
            size_line, _, remaining = remaining.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            body += remaining[:size]
            remaining = remaining[size + 2 :]
        assert body == b"hello world, all chunks"
        sock.sendall(second.encode())
        answer = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b'"X-Upstream-Echo"' not in answer  # the echo is in a header, not the body
    assert f"{token}-next".encode() in answer


@pytest.mark.parametrize(
    ("name", "chunks"),
    [
        ("bad-size", b"zz\r\nabc\r\n0\r\n\r\n"),
        ("negative-size", b"-5\r\nabcde\r\n0\r\n\r\n"),
        ("data-longer-than-size", b"3\r\nabcdef\r\n0\r\n\r\n"),
        ("no-crlf-after-data", b"3\r\nabcXY0\r\n\r\n"),
        ("huge-size", b"fffffffffffffffffffff\r\nab\r\n"),
    ],
)
def test_a_malformed_chunked_body_is_400_and_nothing_is_forwarded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, name: str, chunks: bytes
) -> None:
    head = (
        f"POST /api/ok/{token}-{name} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = _exchange(gateway.port, head + chunks, half_close=True)
    assert _status(answer) == 400, answer[:500]
    assert b"application/problem+json" in answer
    assert b'"code":"bad_request"' in answer.replace(b" ", b"")
    assert answer.count(b"HTTP/1.1 ") == 1, answer  # one answer, not a second error
    assert upstream.received(token) == []
    assert "Traceback" not in gateway.server.log()


def test_a_client_gone_mid_chunked_body_forwards_nothing_and_logs_no_traceback(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    head = (
        f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    answer = _exchange(gateway.port, head + b"10\r\nabc", half_close=True)
    assert answer == b"" or _status(answer) == 400, answer[:500]
    assert upstream.received(token) == []
    assert "Traceback" not in gateway.server.log()


@pytest.mark.parametrize("coding", ["gzip, chunked", "identity, chunked", "deflate, chunked"])
def test_a_transfer_coding_other_than_chunked_is_501(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, coding: str
) -> None:
    """gunicorn accepts these; forwarded, the upstream would get still-encoded bytes
    with no header saying so."""
    payload = (
        f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Transfer-Encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    ).encode()
    answer = _exchange(gateway.port, payload)
    assert _status(answer) == 501, answer[:500]
    assert b"application/problem+json" in answer
    assert b'"code":"not_implemented"' in answer.replace(b" ", b"")
    assert upstream.received(token) == []


def test_a_websocket_upgrade_is_501_not_a_plain_get(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(
        f"/api/ok/{token}",
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    assert_problem(reply, 501, "not_implemented", f"/api/ok/{token}")
    assert upstream.received(token) == []


def test_request_headers_over_the_total_cap_are_431(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    """Each field is under gunicorn's per-field limit; together they are about 1 MB."""
    headers = [(f"X-Big-{i}", "b" * 16_000) for i in range(60)]
    reply = http_request(gateway.port, "GET", f"/api/ok/{token}", headers, timeout=10)
    assert_problem(reply, 431, "request_header_fields_too_large", f"/api/ok/{token}")
    assert upstream.received(token) == []
    # just under the cap still passes
    fine = http_request(
        gateway.port, "GET", f"/api/ok/{token}-ok", [("X-Big", "b" * 16_000)], timeout=10
    )
    assert fine.status == 200, fine.describe()


def test_pipelined_requests_are_each_answered_in_order(gateway: Gateway, token: str) -> None:
    """Two requests in one packet: the second waits in the gateway's buffer, not on
    the socket, and must not be mistaken for an idle connection."""
    payload = (
        f"GET /api/ok/{token}-1 HTTP/1.1\r\nHost: x\r\n\r\n"
        f"POST /api/ok/{token}-2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        f"GET /api/ok/{token}-3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = _exchange(gateway.port, payload)
    assert answer.count(b"HTTP/1.1 200") == 3, answer
    first, second, third = (answer.index(f"{token}-{n}".encode()) for n in (1, 2, 3))
    assert first < second < third


def test_a_body_left_unread_is_skipped_before_the_next_request(
    gateway: Gateway, token: str
) -> None:
    """/healthz does not read the body sent with it; the next request on the
    connection still parses from its own first byte."""
    payload = (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        f"GET /api/ok/{token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = _exchange(gateway.port, payload)
    assert answer.count(b"HTTP/1.1 200") == 2, answer
    assert token.encode() in answer


def test_a_client_still_uploading_reads_the_refusal_it_was_sent(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    """413 is answered before the body is read. The client goes on sending; closed
    with those bytes unread, the socket would answer with a reset, which can make the
    client's system drop the 413 before the client reads it."""
    with socket.create_connection((LOOPBACK, gateway.port), timeout=10) as sock:
        sock.sendall(
            f"POST /api/ok/{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n".encode()
        )
        try:
            for _ in range(60):
                sock.sendall(b"u" * 65536)
        except OSError:
            pass  # the gateway stopped reading: fine, the answer is what matters
        data = read_until_closed(sock, within=5)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert upstream.received(token) == []
