"""Redirects are passed on, never followed, and Location/Link never name the upstream."""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import pytest

from .support import PUBLIC_URL, Gateway, Reply
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

MOVED = "/up/ok/moved?x=1&y=%20z"
MOVED_PUBLIC = "/api/ok/moved?x=1&y=%20z"


def _assert_no_upstream_address_in_headers(reply: Reply, upstream: MisbehavingUpstream) -> None:
    head = reply.raw_head.decode("latin-1")
    assert upstream.host_port not in head, head
    assert f":{upstream.port}" not in head, head


def test_redirect_is_passed_on_not_followed_with_location_rewritten(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    followed_before = len(upstream.received("/up/ok/moved"))
    reply = gateway.get(f"/api/redirect?t={token}")
    assert reply.status == 302, reply.describe()
    assert reply.header_values("Location") == [f"{gateway.base_url}{MOVED_PUBLIC}"]
    _assert_no_upstream_address_in_headers(reply, upstream)
    assert len(upstream.received(token)) == 1
    assert len(upstream.received("/up/ok/moved")) == followed_before


def test_redirect_body_never_reveals_the_upstream_address(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/redirect?t={token}")
    assert reply.status == 302, reply.describe()
    assert upstream.host_port.encode() not in reply.body, reply.describe()


def test_rewritten_location_leads_back_to_the_same_upstream_resource(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/redirect?t={token}")
    location = reply.header("Location") or ""
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == gateway.base_url, location
    follow_token = f"{token}-followed"
    followed = gateway.get(f"{parts.path}?{parts.query}&f={follow_token}")
    assert followed.status == 200, followed.describe()
    assert upstream.only(follow_token).target == f"{MOVED}&f={follow_token}"


def test_relative_redirect_location_is_rewritten_to_the_public_path(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/redirect-relative?t={token}")
    assert reply.status == 302, reply.describe()
    location = reply.header("Location") or ""
    # Absolute or relative, it must resolve to the public path on the gateway.
    resolved = urljoin(f"{gateway.base_url}/api/redirect-relative", location)
    assert resolved == f"{gateway.base_url}/api/ok/moved?x=1", location


def test_link_header_is_rewritten_and_outside_links_are_kept(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/api/link?t={token}")
    assert reply.status == 200, reply.describe()
    links = ", ".join(reply.header_values("Link"))
    assert f'<{gateway.base_url}/api/ok/list?cursor=abc%3D&limit=2>; rel="next"' in links
    assert f'<{gateway.base_url}/api/ok/list?cursor=first>; rel="first"' in links
    assert '<https://docs.example.org/help>; rel="help"' in links
    _assert_no_upstream_address_in_headers(reply, upstream)


def test_location_and_link_use_the_configured_public_url(
    public_gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = public_gateway.get(f"/api/redirect?t={token}")
    assert reply.status == 302, reply.describe()
    assert reply.header_values("Location") == [f"{PUBLIC_URL}{MOVED_PUBLIC}"]
    _assert_no_upstream_address_in_headers(reply, upstream)

    reply = public_gateway.get(f"/api/link?t={token}")
    links = ", ".join(reply.header_values("Link"))
    assert f'<{PUBLIC_URL}/api/ok/list?cursor=abc%3D&limit=2>; rel="next"' in links
    assert public_gateway.host_port not in links
    _assert_no_upstream_address_in_headers(reply, upstream)


@pytest.mark.parametrize(
    "claim",
    [
        [("X-Forwarded-Proto", "https")],
        [("X-Forwarded-Ssl", "on")],
        [("X-Forwarded-Host", "evil.example")],
    ],
    ids=["xf_proto", "xf_ssl", "xf_host"],
)
def test_client_forwarded_claims_never_change_the_rewritten_location(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, claim: list[tuple[str, str]]
) -> None:
    # trusted_proxies 0: the public base comes from the connection and Host alone.
    reply = gateway.get(f"/api/redirect?t={token}", claim)
    assert reply.status == 302, reply.describe()
    assert reply.header_values("Location") == [f"{gateway.base_url}{MOVED_PUBLIC}"]
