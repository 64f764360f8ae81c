"""Who is calling, as far as the gateway may believe it.

`X-Forwarded-For` is only as honest as the proxies that wrote it: with
`trusted_proxies: N`, the last N hops of the list were written by our own proxies and
the entry before them is the client. Anything further left is the client's own claim
and is ignored, so rotating that header buys a caller nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_address

from werkzeug.wrappers import Request


@dataclass(frozen=True, slots=True)
class ClientInfo:
    ip: str  # the client address the gateway believes
    forwarded_for: str  # X-Forwarded-For to send upstream: the believed chain + our peer
    proto: str  # scheme the client used
    host: str  # host the client asked for


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
    host = request.host
    if trusted_proxies <= 0:
        return ClientInfo(peer, peer, proto, host)
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
    forwarded_host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if forwarded_host and all(c.isalnum() or c in ".-:[]" for c in forwarded_host):
        host = forwarded_host
    return ClientInfo(ip, ", ".join(chain), proto, host)
