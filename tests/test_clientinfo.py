"""Which client address the gateway believes, given X-Forwarded-For and trusted hops."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.clientinfo import ClientInfo, client_info, host_warning, require_host, valid_host
from gateway.config.model import GatewaySettings
from gateway.problems import InvalidHost

PEER = "10.0.0.2"  # the socket peer: the gateway's nearest proxy, or the client itself


def request(*forwarded_for: str, peer: str = PEER, **headers: str) -> Request:
    pairs = [("X-Forwarded-For", value) for value in forwarded_for]
    pairs += [(name.replace("_", "-"), value) for name, value in headers.items()]
    environ = EnvironBuilder(
        path="/api/v1/users",
        base_url="http://gateway.example:8080",
        headers=pairs,
        environ_base={"REMOTE_ADDR": peer},
    ).get_environ()
    return Request(environ)


# --- trusted_proxies: 0 -------------------------------------------------------------------


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    info = client_info(request(), 0)
    assert info == ClientInfo(
        ip=PEER, forwarded_for=PEER, proto="http", host="gateway.example:8080"
    )


def test_without_trusted_proxies_a_spoofed_chain_is_ignored() -> None:
    info = client_info(request("1.1.1.1, 2.2.2.2"), 0)
    assert info.ip == PEER
    assert info.forwarded_for == PEER


def test_without_trusted_proxies_forwarded_proto_and_host_are_ignored() -> None:
    info = client_info(request(X_Forwarded_Proto="https", X_Forwarded_Host="evil.example"), 0)
    assert info.proto == "http"
    assert info.host == "gateway.example:8080"


# --- trusted_proxies: 1 -------------------------------------------------------------------


def test_one_trusted_proxy_believes_the_last_hop() -> None:
    info = client_info(request("203.0.113.7"), 1)
    assert info.ip == "203.0.113.7"
    assert info.forwarded_for == f"203.0.113.7, {PEER}"


def test_one_trusted_proxy_ignores_hops_the_client_wrote() -> None:
    # The client sent "X-Forwarded-For: 1.1.1.1, 6.6.6.6"; our proxy appended its peer.
    info = client_info(request("1.1.1.1, 6.6.6.6, 203.0.113.7"), 1)
    assert info.ip == "203.0.113.7"
    assert info.forwarded_for == f"203.0.113.7, {PEER}"


def test_rotating_the_spoofed_part_does_not_change_the_client() -> None:
    seen = {client_info(request(f"198.51.100.{n}, 203.0.113.7"), 1).ip for n in range(1, 20)}
    assert seen == {"203.0.113.7"}


def test_repeated_forwarded_for_headers_form_one_list() -> None:
    info = client_info(request("1.1.1.1", "203.0.113.7"), 1)
    assert info.ip == "203.0.113.7"


def test_one_trusted_proxy_without_forwarded_for_falls_back_to_the_peer() -> None:
    info = client_info(request(), 1)
    assert info.ip == PEER
    assert info.forwarded_for == PEER


def test_trusted_proxy_forwarded_proto_and_host_are_believed() -> None:
    info = client_info(
        request("203.0.113.7", X_Forwarded_Proto="HTTPS", X_Forwarded_Host="api.example.com"), 1
    )
    assert info.proto == "https"
    assert info.host == "api.example.com"


@pytest.mark.parametrize("proto", ["ftp", "javascript", ""])
def test_unknown_forwarded_proto_is_ignored(proto: str) -> None:
    assert client_info(request("203.0.113.7", X_Forwarded_Proto=proto), 1).proto == "http"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example/path",
        "a b",
        "user@evil.example",
        "<x>",
        "evil.example:0",
        "evil.example:99999",
        "evil.example:",
        "::::",
        "[::1",
        "\uff45vil.example",  # fullwidth "e": a letter to str.isalnum, not to RFC 3986
    ],
)
def test_forwarded_host_with_odd_characters_is_ignored(host: str) -> None:
    info = client_info(request("203.0.113.7", X_Forwarded_Host=host), 1)
    assert info.host == "gateway.example:8080"


# --- trusted_proxies: 2 -------------------------------------------------------------------


def test_two_trusted_proxies_believe_the_hop_before_the_inner_proxy() -> None:
    # client -> outer proxy (appends client) -> inner proxy (appends outer) -> gateway
    info = client_info(request("203.0.113.7, 10.0.0.1"), 2)
    assert info.ip == "203.0.113.7"
    assert info.forwarded_for == f"203.0.113.7, 10.0.0.1, {PEER}"


def test_two_trusted_proxies_ignore_a_spoofed_prefix() -> None:
    info = client_info(request("6.6.6.6, 7.7.7.7, 203.0.113.7, 10.0.0.1"), 2)
    assert info.ip == "203.0.113.7"
    assert "6.6.6.6" not in info.forwarded_for
    assert "7.7.7.7" not in info.forwarded_for


# --- malformed entries --------------------------------------------------------------------


@pytest.mark.parametrize("garbage", ["unknown", "not-an-ip", "999.1.1.1", "1.2.3", "<script>"])
def test_malformed_believed_entry_falls_back_to_the_peer(garbage: str) -> None:
    info = client_info(request(f"203.0.113.7, {garbage}"), 1)
    assert info.ip == PEER
    assert garbage not in info.forwarded_for


def test_malformed_entries_never_reach_the_upstream_chain() -> None:
    info = client_info(request("203.0.113.7, junk, 10.0.0.1"), 3)
    assert info.ip == "203.0.113.7"
    assert info.forwarded_for == f"203.0.113.7, 10.0.0.1, {PEER}"


def test_empty_entries_are_skipped() -> None:
    info = client_info(request(" , ,203.0.113.7 , "), 1)
    assert info.ip == "203.0.113.7"


@pytest.mark.parametrize(
    ("entry", "ip"),
    [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
    ],
)
def test_ports_and_ipv6_forms_are_normalised(entry: str, ip: str) -> None:
    assert client_info(request(entry), 1).ip == ip


# --- the Host header (RFC 9112 §3.2) ---------------------------------------------------------


def with_host(host: str | None, *, protocol: str = "HTTP/1.1", **headers: str) -> Request:
    """A request whose Host field is exactly `host` (None: no Host field at all)."""
    environ = request(**headers).environ
    environ["SERVER_PROTOCOL"] = protocol
    if host is None:
        del environ["HTTP_HOST"]
    else:
        environ["HTTP_HOST"] = host
    return Request(environ)


INVALID_HOSTS = [
    "a@evil.example",
    "user:pass@evil.example",
    "evil.example/path",
    "evil.example?x",
    "evil.example#x",
    "",
    " ",
    ":8080",
    "evil.example:",
    "evil.example:0",
    "evil.example:65536",
    "evil.example:8o",
    "evil.example:+80",
    "a:b:c",
    "evil.example, other.example",  # two Host fields, as a WSGI server folds them
    "[::1",
    "[::1]x",
    "[not-ipv6]",
    "[fe80::1%25eth0]",
    "2001:db8::1",  # an IPv6 address outside brackets
    "ev_il.example",
    "ev%69l.example",
    "\u00e9vil.example",
    "evil.example\\x",
]


@pytest.mark.parametrize("trusted", [0, 1])
@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_an_invalid_host_leaves_no_host_and_is_refused(host: str, trusted: int) -> None:
    info = client_info(with_host(host, X_Forwarded_Host="gateway.example"), trusted)
    assert info.host == ""
    assert info.host_refused == "The Host header is not a valid host."
    assert not valid_host(host)
    with pytest.raises(InvalidHost) as refused:
        require_host(info)
    assert (refused.value.status, refused.value.code) == (400, "bad_request")


@pytest.mark.parametrize(
    ("host", "kept"),
    [
        ("gateway.example", "gateway.example"),
        ("GW-1.Example.:8443", "GW-1.Example.:8443"),
        ("localhost:8080", "localhost:8080"),
        ("127.0.0.1:65535", "127.0.0.1:65535"),
        ("[::1]:8080", "[::1]:8080"),
        ("[2001:db8::1]", "[2001:db8::1]"),
        ("[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.1]:1"),
        ("gateway.example:80", "gateway.example"),  # the scheme's default port, as URLs drop it
    ],
)
def test_a_valid_host_is_kept_and_accepted(host: str, kept: str) -> None:
    info = client_info(with_host(host), 0)
    assert (info.host, info.host_refused) == (kept, None)
    require_host(info)


def test_an_http11_request_without_host_is_refused() -> None:
    info = client_info(with_host(None), 0)
    assert info.host == ""
    assert info.host_refused == "The request has no Host header."
    with pytest.raises(InvalidHost):
        require_host(info)


def test_an_http10_request_without_host_gets_the_servers_own_address() -> None:
    info = client_info(with_host(None, protocol="HTTP/1.0"), 0)
    assert (info.host, info.host_refused) == ("gateway.example:8080", None)
    require_host(info)


def test_a_believed_forwarded_host_does_not_excuse_an_invalid_host() -> None:
    info = client_info(with_host("a@evil", X_Forwarded_Host="api.example.com"), 1)
    assert (info.host, info.host_refused) == ("", "The Host header is not a valid host.")


def test_a_believed_forwarded_host_is_validated_like_host() -> None:
    good = client_info(with_host("10.0.0.2:8080", X_Forwarded_Host="api.example.com:8443"), 1)
    assert (good.host, good.host_refused) == ("api.example.com:8443", None)
    odd = client_info(with_host("10.0.0.2:8080", X_Forwarded_Host="api.example.com:0"), 1)
    assert (odd.host, odd.host_refused) == ("10.0.0.2:8080", None)


def test_links_that_follow_the_host_header_are_warned_about() -> None:
    warning = host_warning(GatewaySettings())
    assert warning is not None
    assert "public_url" in warning and "Host header" in warning
    assert host_warning(GatewaySettings(public_url="https://api.example.com")) is None
    assert host_warning(GatewaySettings(trusted_proxies=1)) is None
