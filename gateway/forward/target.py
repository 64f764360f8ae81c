"""The request target sent upstream: bytes a server parses as its client sent them.

Paths are re-encoded by their templates before they get here; what is outside
printable ASCII is escaped once more, as a client library would, and the client's
query string is passed on byte for byte, legally encoded.
"""

from __future__ import annotations

from werkzeug.wrappers import Request


def request_target(path_and_query: str) -> bytes:
    """The request target as bytes; anything outside printable ASCII escaped, as a
    client library would (the paths are re-encoded already: this is belt and braces)."""
    if path_and_query.isascii() and path_and_query.isprintable() and " " not in path_and_query:
        return path_and_query.encode("ascii")
    return _printable_ascii(path_and_query.encode("utf-8")).encode("ascii")


def _printable_ascii(data: bytes) -> str:
    """Bytes outside printable ASCII percent-escaped, the rest as they are."""
    return "".join(chr(b) if 0x21 <= b <= 0x7E else f"%{b:02X}" for b in data)


def client_query(request: Request) -> str:
    raw: str = request.environ.get("QUERY_STRING", "")
    if not raw:
        return ""
    # WSGI hands over the bytes as latin-1; anything outside printable ASCII is
    # escaped so the upstream gets the same bytes, legally encoded.
    return "?" + _printable_ascii(raw.encode("latin-1", "replace"))
