"""Checks on a request head that no route changes: its total size, protocol upgrades."""

from __future__ import annotations

from werkzeug.wrappers import Request

from gateway.forward.headers import connection_named
from gateway.problems import HeaderFieldsTooLarge, NotImplementedByGateway

# CGI names of the two fields WSGI keeps without the HTTP_ prefix.
_UNPREFIXED = ("CONTENT_TYPE", "CONTENT_LENGTH")


def header_bytes(environ: dict[str, object]) -> int:
    """About how many bytes the header fields took on the wire: name, ": ", value and
    CRLF for each (WSGI folds repeated fields into one; their commas count instead)."""
    total = 0
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in _UNPREFIXED:
            name_length = len(key) - 5 if key.startswith("HTTP_") else len(key)
            total += name_length + 4 + (len(value) if isinstance(value, str) else 0)
    return total


def check_head(request: Request, max_header_bytes: int) -> None:
    size = header_bytes(request.environ)
    if size > max_header_bytes:
        # RFC 6585 §5. gunicorn bounds each field and their number; this bounds their
        # sum, which is what is held and forwarded.
        raise HeaderFieldsTooLarge(
            f"The request's header fields take about {size} bytes; at most "
            f"{max_header_bytes} are accepted."
        )
    # RFC 9110 §7.8: an upgrade is asked for only with `Connection: upgrade`; a bare
    # Upgrade field is just a hop-by-hop field, dropped like the others.
    if "Upgrade" in request.headers and "upgrade" in connection_named(
        request.headers.getlist("Connection")
    ):
        # A WebSocket handshake forwarded without its hop-by-hop Upgrade header would be
        # a plain GET, and the client would get a 200 where it asked for 101.
        raise NotImplementedByGateway("Protocol upgrades (such as WebSocket) are not supported.")
