"""An upstream's successful answer on its way to the client.

Small bodies are read whole by the forwarder; larger ones are relayed as they
arrive, under the exchange's deadline, and the client connection is cut if the
upstream fails midway, so a truncated body never passes for a complete one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpcore
from werkzeug.wrappers import Response

from gateway.deadline import deadline_at

log = logging.getLogger("gateway.proxy")

# What the pool raises once a connection is up (connect failures are caught first).
AFTER_CONNECT = (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError)


class RelayedResponse(Response):
    """An upstream's response as it was: no Content-Type invented where it sent none."""

    default_mimetype = None


class UpstreamBodyAborted(Exception):
    """The upstream failed after the response started: the client connection is cut so
    a truncated body can never pass for a complete one."""


class Relay:
    """The upstream body as it arrives, cutting the client off if the upstream fails.

    A class, not a generator: the server closes the body it was given whether or not
    it iterated it (a client gone before the first byte), and a generator never
    started would skip its `finally`, leaving the connection taken from the pool."""

    def __init__(
        self, upstream_response: httpcore.Response, deadline: float, upstream_name: str
    ) -> None:
        self.upstream_response = upstream_response
        self.deadline = deadline
        self.upstream_name = upstream_name

    def __iter__(self) -> Iterator[bytes]:
        relayed = 0
        try:
            with deadline_at(self.deadline):
                for chunk in self.upstream_response.iter_stream():
                    relayed += len(chunk)
                    yield chunk
        except AFTER_CONNECT as exc:
            log.warning(
                "upstream %s body failed after %d bytes: %s: %s",
                self.upstream_name,
                relayed,
                type(exc).__name__,
                exc,
            )
            raise UpstreamBodyAborted(str(exc)) from None
        finally:
            self.upstream_response.close()

    def close(self) -> None:
        self.upstream_response.close()
