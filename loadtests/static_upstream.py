#!/usr/bin/env python3
"""The bench's near-free upstream when nginx is not installed: a tiny asyncio HTTP/1.1
server that answers every GET (and HEAD) with the same small JSON body, the size of
the users stub's user.

Keep-alive (HTTP/1.1 by default, HTTP/1.0 with `Connection: keep-alive`), one request
at a time per connection (a pipelined request is answered after the one before it),
`Content-Length` framing; request bodies framed by Content-Length are read and dropped,
chunked ones are refused. Bounded: heads up to 16 KiB, bodies up to 1 MiB, up to 1,024
connections, idle connections closed after 60 s. Other methods get 405.

    .venv/bin/python loadtests/static_upstream.py --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import signal
import time
from collections.abc import Sequence

# Shaped like the users stub's GET /users/<id> answer (206 bytes there).
BODY = json.dumps(
    {
        "id": "usr_01090503af8f",
        "email": "dana.haddad.243@example.com",
        "name": "Dana Haddad",
        "role": "member",
        "tenant_id": "acme",
        "created_at": "2024-12-31T05:02:30.300743Z",
        "updated_at": "2024-12-31T05:02:30.300743Z",
    },
    separators=(",", ":"),
).encode()
MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
MAX_CONNECTIONS = 1024
IDLE_TIMEOUT_S = 60.0

_date = ("", 0)


def http_date() -> str:
    global _date
    now = int(time.time())
    if _date[1] != now:
        _date = (email.utils.formatdate(now, usegmt=True), now)
    return _date[0]


def response(status: str, body: bytes, *, head_only: bool, close: bool, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nServer: static-upstream\r\nDate: {http_date()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


class StaticProtocol(asyncio.Protocol):
    open: set[asyncio.Transport] = set()

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.skip = 0  # request body bytes still to drop
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(StaticProtocol.open) >= MAX_CONNECTIONS:
            transport.abort()
            return
        StaticProtocol.open.add(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            StaticProtocol.open.discard(self.transport)
        if self.idle is not None:
            self.idle.cancel()

    def _arm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        assert self.transport is not None
        self.idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self.transport.close)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self._arm()
        self.buf += data
        while not self.transport.is_closing():
            if self.skip:
                dropped = min(self.skip, len(self.buf))
                del self.buf[:dropped]
                self.skip -= dropped
                if self.skip:
                    return
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._fail("431 Request Header Fields Too Large")
                return
            if end > MAX_HEAD:
                self._fail("431 Request Header Fields Too Large")
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            self._answer(head)

    def _fail(self, status: str) -> None:
        assert self.transport is not None
        self.transport.write(response(status, b"{}", head_only=False, close=True))
        self.transport.close()

    def _answer(self, head: str) -> None:
        assert self.transport is not None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._fail("400 Bad Request")
            return
        method, version = parts[0], parts[2]
        connection = ""
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "connection":
                connection = value.strip().lower()
            elif name == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    self._fail("400 Bad Request")
                    return
            elif name == "transfer-encoding":
                self._fail("411 Length Required")
                return
        if not 0 <= length <= MAX_BODY:
            self._fail("413 Content Too Large")
            return
        self.skip = length
        keep = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
        if method in ("GET", "HEAD"):
            out = response("200 OK", BODY, head_only=method == "HEAD", close=not keep)
        else:
            out = response(
                "405 Method Not Allowed",
                b"{}",
                head_only=False,
                close=not keep,
                extra="Allow: GET, HEAD\r\n",
            )
        self.transport.write(out)
        if not keep:
            self.transport.close()


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StaticProtocol, host, port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()  # no wait_closed(): it would wait for the idle keep-alive connections
    for transport in list(StaticProtocol.open):
        transport.abort()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="static_upstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
