"""Who is calling, as far as the gateway may believe it.

`X-Forwarded-For` is only as honest as the proxies that wrote it: with
`trusted_proxies: N`, the last N hops of the list were written by our own proxies and
the entry before them is the client. Anything further left is the client's own claim
and is ignored, so rotating that header buys a caller nothing.

The host the client asked for (`Host`, or a believed `X-Forwarded-Host`) is only used
when it is a well-formed host; a request whose `Host` is not is refused (RFC 9112
§3.2), so no link is ever built on a host such as `a@evil`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from werkzeug.wrappers import Request

from gateway.config.model import GatewaySettings
from gateway.problems import InvalidHost


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str  # the client address the gateway believes
    forwarded_for: str  # X-Forwarded-For to send upstream: the believed chain + our peer
    proto: str  # scheme the client used
    host: str  # host[:port] the client asked for; "" when there is no usable one
    host_refused: str | None = None  # why the request's Host is refused, else None


def require_host(client: ClientInfo) -> None:
    """Raise InvalidHost (400 `bad_request`) for a request whose Host is refused."""
    if client.host_refused is not None:
        raise InvalidHost(client.host_refused)


def host_warning(settings: GatewaySettings) -> str | None:
    """The start-up warning for a gateway whose links follow each client's Host."""
    if settings.public_url or settings.trusted_proxies > 0:
        return None
    return (
        "gateway.public_url is empty and gateway.trusted_proxies is 0, so links in "
        "Location and Link headers are built from the client's Host header, which any "
        "client can set; set gateway.public_url (GATEWAY_PUBLIC_URL in the reference "
        "routes.yaml) to the address clients use."
    )


# RFC 3986 §3.2.2 as http URIs use it (RFC 9110 §4.2.1): a reg-name of letters, digits,
# "-" and "." (no percent-encoding, no sub-delims, no userinfo), an IPv4address, or an
# IP-literal holding an IPv6address; then an optional numeric port (§3.2.3).
_REG_NAME = re.compile(r"[A-Za-z0-9.-]+")
_PORT = re.compile(r"[0-9]{1,5}")
_DEFAULT_PORT = {"http": ":80", "https": ":443"}


def valid_host(value: str) -> bool:
    """Whether `value` is a well-formed `uri-host [ ":" port ]` (RFC 9112 §3.2)."""
    if value.startswith("["):
        literal, bracket, rest = value[1:].partition("]")
        # A zone id ("%25eth0", RFC 6874) names an interface of the client's own host:
        # it has no meaning here, and ip_address would accept it.
        if not bracket or "%" in literal:
            return False
        try:
            IPv6Address(literal)
        except ValueError:
            return False
        if not rest:
            return True
        if not rest.startswith(":"):
            return False
        colon, port = ":", rest[1:]
    else:
        name, colon, port = value.partition(":")  # a reg-name or IPv4 holds no ":"
        if not _REG_NAME.fullmatch(name):
            return False
    if not colon:
        return True
    return bool(_PORT.fullmatch(port)) and 1 <= int(port) <= 65535


def _usable_host(value: str, proto: str) -> str | None:
    """`value` without the scheme's default port (as URLs are normalised, RFC 3986
    §6.2.3), or None when it is not a well-formed host."""
    if not valid_host(value):
        return None
    default = _DEFAULT_PORT.get(proto)
    return value.removesuffix(default) if default else value


def _request_host(request: Request, proto: str) -> tuple[str, str | None]:
    """The host the request names, and why it is refused (None when it is not)."""
    # WSGI servers fold repeated Host fields into one value joined by ",", which no
    # valid host holds: two Host fields are refused with the rest.
    sent = request.environ.get("HTTP_HOST")
    if sent is None:
        if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.1":
            return "", "The request has no Host header."
        # HTTP/1.0 may omit Host: the address the server listens on stands in.
        return _usable_host(request.host, proto) or "", None
    host = _usable_host(sent, proto)
    if host is None:
        return "", "The Host header is not a valid host."
    return host, None


def _valid_ip(text: str) -> str | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:1234"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "1.2.3.4:5678"
        text = text.split(":", 1)[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d; they are IPv4 clients.
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def client_info(request: Request, trusted_proxies: int) -> ClientInfo:
    peer = _valid_ip(request.remote_addr or "") or "0.0.0.0"
    proto = request.scheme
    if trusted_proxies <= 0:
        host, refused = _request_host(request, proto)
        return ClientInfo(peer, peer, proto, host, refused)
    hops = [h.strip() for h in ",".join(request.headers.getlist("X-Forwarded-For")).split(",")]
    hops = [h for h in hops if h]
    # Our peer is the nearest trusted proxy; the N-1 hops before it are the others.
    trusted = hops[-(trusted_proxies - 1) :] if trusted_proxies > 1 else []
    believed = hops[len(hops) - len(trusted) - 1 : len(hops)] if len(hops) > len(trusted) else hops
    client = _valid_ip(believed[0]) if believed else None
    ip = client or peer
    chain = [h for h in (_valid_ip(h) for h in believed) if h] + [peer]
    forwarded_proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if forwarded_proto in ("http", "https"):
        proto = forwarded_proto
    # The Host our proxy sent decides the 400; what it says the client asked for, when
    # well formed, decides the links.
    host, refused = _request_host(request, proto)
    forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    believed_host = _usable_host(forwarded_host, proto) if forwarded_host else None
    if believed_host is not None and refused is None:
        host = believed_host
    return ClientInfo(ip, ", ".join(chain), proto, host, refused)


Networks = tuple[IPv4Network | IPv6Network, ...]


def networks(cidrs: Iterable[str]) -> Networks:
    """Parsed once from the configuration (checked there to be networks)."""
    return tuple(ip_network(cidr, strict=False) for cidr in cidrs)


def in_networks(client_ip: str, allowed: Networks) -> bool:
    """Whether a client address is on one of `allowed`; False for one that is not an
    address at all."""
    try:
        address = ip_address(client_ip)
    except ValueError:
        return False
    return any(address in network for network in allowed)
