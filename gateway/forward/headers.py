"""Which header fields cross the gateway, in each direction, and which it sets itself.

RFC 9110 §7.6.1: connection-specific fields are never forwarded by an intermediary;
the identity fields are the gateway's to set (clients' copies never reach an
upstream); an upstream's own server details never reach a client.
"""

from __future__ import annotations

import re

# RFC 9110 §7.6.1: connection-specific fields, never forwarded by an intermediary.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
IDENTITY_HEADERS = frozenset(
    {
        "x-user-id",
        "x-user-roles",
        "x-tenant-id",
        "x-auth-method",
        "x-consumer-id",
    }
)
# Request fields the gateway sets itself, or that only make sense on the client hop.
REQUEST_OWN = (
    frozenset(
        {
            "host",
            "content-length",
            "expect",
            "forwarded",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-real-ip",
            "x-request-id",
            "traceparent",
        }
    )
    | HOP_BY_HOP
    | IDENTITY_HEADERS
)
# A composed part is read whole and parsed as JSON by the gateway: the client's
# representation preferences, conditions and ranges are about the composed answer, not
# about each part (a 304, a 206 or a gzip body from a part could not be merged).
PART_DROP = frozenset(
    {
        "accept",
        "accept-encoding",
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "content-type",
        "content-encoding",
    }
)
# The client's conditions on its representation, which the response cache replaces with
# its own validators (it answers the client's from the whole answer it then keeps).
CONDITIONAL = frozenset(
    {"if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range"}
)
PART_OWN = (("Accept", "application/json"), ("Accept-Encoding", "identity"))
# Response fields the client must not see from an upstream.
RESPONSE_DROP = HOP_BY_HOP | {"server", "x-powered-by", "date"}
ERROR_BODY_FIELDS = frozenset({"content-length", "content-type", "content-encoding"})
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


def connection_named(values: list[str]) -> set[str]:
    """The field names a Connection header lists (RFC 9110 §7.6.1): hop-by-hop too."""
    return {token.strip().lower() for value in values for token in value.split(",")}


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The first value of a response field (`name` in lower case), or None."""
    for raw_name, raw_value in headers:
        if raw_name.lower() == name:
            return raw_value.decode("latin-1")
    return None


def header_values(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1") for n, v in headers if n.lower() == name]
