"""The request body reader: framing, limits, the deadline, memory or a spool file."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.problems import BadRequest, NotImplementedByGateway, PayloadTooLarge, RequestTimeout
from gateway.request_body import BufferedBody, check_framing, read_body


def _request(body: bytes = b"", headers: dict[str, str] | None = None, **environ: Any) -> Request:
    built = EnvironBuilder(method="POST", path="/x", data=body, headers=headers or {})
    env = built.get_environ()
    env.update(environ)
    return Request(env)


def test_a_small_body_stays_in_memory() -> None:
    body = read_body(_request(b"hello"), max_bytes=100, memory_bytes=10, timeout=5)
    assert body.size == 5 and body.content == b"hello"


def test_a_body_over_the_memory_size_is_spooled_and_replays_whole() -> None:
    data = bytes(range(256)) * 1000
    body = read_body(_request(data), max_bytes=10**6, memory_bytes=1000, timeout=5)
    try:
        assert body.size == len(data)
        assert isinstance(body.content, BufferedBody)
        assert b"".join(body) == data
        assert b"".join(body) == data  # a second iteration starts over (retries)
    finally:
        body.close()


def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    with pytest.raises(PayloadTooLarge):
        read_body(_request(b"x" * 20), max_bytes=10, memory_bytes=10, timeout=5)


def test_a_chunked_body_over_the_limit_is_413() -> None:
    stream = io.BytesIO(b"x" * 50)
    request = _request(
        headers={"Transfer-Encoding": "chunked"},
        **{"wsgi.input": stream, "wsgi.input_terminated": True},
    )
    request.environ.pop("CONTENT_LENGTH", None)
    with pytest.raises(PayloadTooLarge):
        read_body(request, max_bytes=10, memory_bytes=10, timeout=5)


def test_a_body_shorter_than_declared_is_400() -> None:
    request = _request(b"abc", **{"CONTENT_LENGTH": "10"})
    with pytest.raises(BadRequest):
        read_body(request, max_bytes=100, memory_bytes=100, timeout=5)


class _DrippingStream:
    """One byte per read, each after a pause."""

    def __init__(self, pause: float) -> None:
        self.pause = pause

    def read(self, size: int = -1) -> bytes:
        time.sleep(self.pause)
        return b"x"


def test_a_body_that_outlasts_the_deadline_is_408() -> None:
    request = _request(b"", **{"CONTENT_LENGTH": "1000", "wsgi.input": _DrippingStream(0.05)})
    request.environ["wsgi.input_terminated"] = True
    started = time.monotonic()
    with pytest.raises(RequestTimeout):
        read_body(request, max_bytes=10_000, memory_bytes=10_000, timeout=0.3)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("coding", ["gzip, chunked", "identity, chunked", "gzip", "br"])
def test_a_coding_other_than_a_single_chunked_is_501(coding: str) -> None:
    with pytest.raises(NotImplementedByGateway):
        check_framing(_request(headers={"Transfer-Encoding": coding}))


@pytest.mark.parametrize("coding", ["chunked", "Chunked", " chunked "])
def test_a_single_chunked_coding_is_accepted(coding: str) -> None:
    check_framing(_request(headers={"Transfer-Encoding": coding}))
