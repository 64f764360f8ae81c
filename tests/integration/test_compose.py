"""Composed routes across real processes: one request, several upstream calls, one JSON.

One gateway (gunicorn, 2 workers) serves composed routes whose parts call the
recording upstream (`/up/<behaviour>/...`) or a closed port. Every test checks the
answer (status, headers, body) and what each part's upstream received: each part
path carries `t={query.t}`, so a test finds its own part requests by its token.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import pytest

from ..tokens import mint_token
from .jwt_support import API_KEY_HEADER, AUDIENCE, ISSUER, hs256_auth, make_api_keys
from .redis_support import SHARED_REDIS_URL, require_shared_redis, unique
from .support import (
    LOOPBACK,
    PROBLEM_JSON,
    Gateway,
    Reply,
    assert_problem,
    gateway_serve_argv,
    start_server,
    subprocess_env,
    write_config,
)
from .upstream import (
    BIG_JSON_CHUNK_SIZE,
    BIG_JSON_CHUNKS,
    DELAY_SECONDS,
    INTERNAL_HOST,
    JSON_ARRAY,
    PROBLEM_422,
    SLOW_SECONDS,
    UPSTREAM_POWERED_BY,
    UPSTREAM_SERVER,
    MisbehavingUpstream,
    Received,
)

pytestmark = pytest.mark.integration

SECRET = secrets.token_urlsafe(32)
KEYS = make_api_keys()
SHORT_TIMEOUT = 0.5  # compose timeout of the route with a slow optional part
REQUIRED_TIMEOUT = 1.0  # compose timeout of the routes with a failing required part
MAX_PART_BYTES = 4096
assert BIG_JSON_CHUNKS * BIG_JSON_CHUNK_SIZE > MAX_PART_BYTES  # big-json is over the limit
BRIEF_TIMEOUT = 0.3  # the own timeout of the `brief` upstream
BREAKER_OPEN_SECONDS = 30
WORKERS = 2
LIMITED = unique("compose-limited")
PARTIAL = "Gateway-Partial"
TRACEPARENT = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-" + "00f067aa0ba902b7" + "-01"
TOKEN_QUERY = "t={query.t}"
# What a part's fields filter keeps of the echo: nothing about hosts or headers.
ECHO_FIELDS = ["method", "target"]


def _part(
    upstream: str, path: str, *, required: bool = True, fields: list[str] | None = None
) -> dict[str, Any]:
    part: dict[str, Any] = {"upstream": upstream, "path": path}
    if not required:
        part["required"] = False
    if fields is not None:
        part["fields"] = fields
    return part


def _main() -> dict[str, Any]:
    """The part that always answers: the echo, filtered to method and target."""
    return _part("users", f"/up/ok/main?{TOKEN_QUERY}", fields=ECHO_FIELDS)


def _route(
    name: str,
    path: str,
    parts: dict[str, dict[str, Any]],
    *,
    timeout: float = 5.0,
    auth: Any = "public",
    **extra: Any,
) -> dict[str, Any]:
    compose: dict[str, Any] = {"timeout": timeout, "max_part_bytes": MAX_PART_BYTES}
    compose["parts"] = parts
    return {
        "name": name,
        "path": path,
        "methods": ["GET", "HEAD"],
        "auth": auth,
        "compose": compose,
        **extra,
    }


def compose_config(upstream_url: str, closed_url: str) -> dict[str, Any]:
    def upstream(url: str, timeout: float = 3.0, **extra: Any) -> dict[str, Any]:
        return {"url": url, "connect_timeout": 1.0, "timeout": timeout, "retries": 1, **extra}

    breaker = {"failures": 1, "open_seconds": BREAKER_OPEN_SECONDS}
    return {
        "version": 1,
        "gateway": {"trusted_proxies": 0},
        "auth": hs256_auth(SECRET, *KEYS.values()),
        "rate_limits": {"storage": SHARED_REDIS_URL, "default": [], "auth_failures": []},
        "upstreams": {
            "users": upstream(upstream_url),
            "orders": upstream(upstream_url),
            "brief": upstream(upstream_url, BRIEF_TIMEOUT),
            "closed": upstream(closed_url),
            "breaker-optional": upstream(closed_url, breaker=breaker),
            "breaker-required": upstream(closed_url, breaker=breaker),
            "guarded": upstream(upstream_url, breaker=breaker),
            "based": upstream(f"{upstream_url}/up/ok/based"),
        },
        "routes": [
            _route(
                "concurrent",
                "/c/concurrent",
                {n: _part("users", f"/up/delay/{n}?{TOKEN_QUERY}") for n in ("a", "b", "c")},
            ),
            _route(
                "optional-slow",
                "/c/optional-slow",
                {
                    "main": _main(),
                    "slow": _part("orders", f"/up/slow/x?{TOKEN_QUERY}", required=False),
                },
                timeout=SHORT_TIMEOUT,
            ),
            _route(
                "optional-brief",
                "/c/optional-brief",
                {
                    "main": _main(),
                    "brief": _part("brief", f"/up/slow/y?{TOKEN_QUERY}", required=False),
                },
            ),
            _route(
                "optional-kind",
                "/c/optional/{kind}",
                {
                    "main": _main(),
                    "extra": _part("orders", f"/up/{{kind}}/extra?{TOKEN_QUERY}", required=False),
                },
            ),
            _route(
                "optional-closed",
                "/c/optional-closed",
                {"main": _main(), "down": _part("closed", f"/down?{TOKEN_QUERY}", required=False)},
            ),
            _route(
                "required-kind",
                "/c/required/{kind}",
                {
                    "good": _part("users", f"/up/ok/good?{TOKEN_QUERY}", fields=ECHO_FIELDS),
                    "bad": _part("orders", f"/up/{{kind}}/bad?{TOKEN_QUERY}"),
                    "extra": _part("orders", f"/up/json404/extra?{TOKEN_QUERY}", required=False),
                },
                timeout=REQUIRED_TIMEOUT,
            ),
            _route(
                "required-closed",
                "/c/required-closed",
                {
                    "good": _part("users", f"/up/ok/good?{TOKEN_QUERY}", fields=ECHO_FIELDS),
                    "down": _part("closed", f"/down?{TOKEN_QUERY}"),
                },
            ),
            _route(
                "inject",
                "/c/inject/{id}",
                {
                    "p": _part(
                        "users",
                        "/up/ok/users/{id}/orders?"
                        + TOKEN_QUERY
                        + "&q={query.q:-none}&limit={query.limit:-5}&fixed=1",
                    )
                },
            ),
            _route(
                "files",
                "/c/files/{rest:path}",
                {"p": _part("users", f"/up/ok/files/{{rest}}/meta?{TOKEN_QUERY}")},
            ),
            _route(
                "by-query",
                "/c/by-query",
                {
                    "main": _main(),
                    "named": _part(
                        "users", f"/up/ok/named/{{query.name}}/x?{TOKEN_QUERY}", required=False
                    ),
                },
            ),
            _route(
                "by-query-required",
                "/c/by-query-required",
                {"named": _part("users", f"/up/ok/named/{{query.name}}/x?{TOKEN_QUERY}")},
            ),
            _route(
                "me",
                "/c/me",
                {
                    "profile": _part(
                        "users",
                        "/up/ok/users/{identity.sub}/profile?tenant={identity.tenant_id}&"
                        + TOKEN_QUERY,
                    )
                },
                auth=["jwt"],
            ),
            _route(
                "who",
                "/c/who",
                {
                    "a": _part("users", f"/up/ok/who-a?{TOKEN_QUERY}"),
                    "b": _part("orders", f"/up/ok/who-b?{TOKEN_QUERY}"),
                },
                auth=["jwt", "api_key"],
            ),
            _route(
                "keyed",
                "/c/keyed",
                {
                    "a": _part("users", f"/up/ok/keyed-a?{TOKEN_QUERY}"),
                    "consumer": _part(
                        "orders", f"/up/ok/consumers/{{identity.consumer_id}}?{TOKEN_QUERY}"
                    ),
                },
                auth=["api_key"],
            ),
            _route(
                LIMITED,
                "/c/limited",
                {
                    "a": _part("users", f"/up/ok/limited-a?{TOKEN_QUERY}", fields=ECHO_FIELDS),
                    "b": _part("orders", f"/up/ok/limited-b?{TOKEN_QUERY}", fields=ECHO_FIELDS),
                },
                rate_limit=["3/minute"],
            ),
            _route(
                "breaker-optional",
                "/c/breaker-optional",
                {
                    "main": _main(),
                    "flaky": _part("breaker-optional", f"/flaky?{TOKEN_QUERY}", required=False),
                },
            ),
            _route(
                "breaker-required",
                "/c/breaker-required",
                {"main": _main(), "flaky": _part("breaker-required", f"/flaky?{TOKEN_QUERY}")},
            ),
            _route(
                "guarded-slow",
                "/c/guarded-slow",
                {
                    "main": _main(),
                    "slow": _part("guarded", f"/up/slow/g?{TOKEN_QUERY}", required=False),
                },
                timeout=SHORT_TIMEOUT,
            ),
            _route(
                "guarded-ok",
                "/c/guarded-ok",
                {"g": _part("guarded", f"/up/ok/g?{TOKEN_QUERY}", fields=ECHO_FIELDS)},
            ),
            _route(
                "based",
                "/c/based/{id}",
                {"p": _part("based", f"/items/{{id}}?{TOKEN_QUERY}", fields=ECHO_FIELDS)},
            ),
            _route(
                "linked",
                "/c/linked",
                {"main": _main(), "links": _part("users", f"/up/link/x?{TOKEN_QUERY}")},
            ),
            _route(
                "fields",
                "/c/fields",
                {
                    "a": _part(
                        "users", f"/up/ok/fa?{TOKEN_QUERY}", fields=["method", "chunked", "nope"]
                    ),
                    "arr": _part("users", f"/up/json-array/x?{TOKEN_QUERY}"),
                    "arrf": _part(
                        "orders", f"/up/json-array/y?{TOKEN_QUERY}", required=False, fields=["x"]
                    ),
                },
            ),
        ],
    }


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstream: MisbehavingUpstream,
    closed_port: int,
) -> Iterator[Gateway]:
    require_shared_redis()  # the rate-limited route counts there
    workdir = tmp_path_factory.mktemp("compose")
    config = compose_config(upstream.url, f"http://{LOOPBACK}:{closed_port}")
    path = write_config(workdir / "routes.yaml", config)
    server = start_server(
        gateway_serve_argv(path, WORKERS, 4),
        workdir=workdir,
        name="gateway-compose",
        env=subprocess_env(),
        workers=WORKERS,
    )
    try:
        yield Gateway(server, config)
    finally:
        server.stop()


# -- helpers ---------------------------------------------------------------------------


def _upper_escapes(text: str) -> str:
    """Percent-escapes compare case-insensitively (RFC 3986 §6.2.2.1)."""
    return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), text)


def _leaks(reply: Reply, upstream: MisbehavingUpstream, closed_port: int) -> None:
    """Nothing of an upstream's body, host or server reaches the client."""
    text = reply.raw_head.decode("latin-1") + "\n" + reply.body.decode("utf-8", "replace")
    for secret in (
        INTERNAL_HOST,
        upstream.host_port,
        f"{LOOPBACK}:{closed_port}",
        "Traceback",
        "hunter2",
        "views.py",
        "OperationalError",
        "<html",
        "<!doctype",
        "SELECT",
        "user 42 not found",
        UPSTREAM_POWERED_BY,
        UPSTREAM_SERVER,
    ):
        assert secret not in text, f"{secret!r} leaked: {reply.describe()}"
    assert "x-powered-by" not in reply.header_names, reply.describe()
    assert "x-backend-host" not in reply.header_names, reply.describe()


def _strict_json(data: bytes) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity are not JSON (a browser refuses them)."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(data, parse_constant=refuse)


def _json_answer(reply: Reply) -> dict[str, Any]:
    assert reply.status == 200, reply.describe()
    assert reply.media_type == "application/json", reply.describe()
    assert reply.header("Content-Length") == str(len(reply.body)), reply.describe()
    body = _strict_json(reply.body)
    assert isinstance(body, dict), reply.describe()
    return body


def _whole(reply: Reply, names: list[str]) -> dict[str, Any]:
    """A complete answer: every part present, no _problems, no Gateway-Partial."""
    body = _json_answer(reply)
    assert list(body) == names, body
    assert PARTIAL.lower() not in reply.header_names, reply.describe()
    assert reply.header("Cache-Control") == "private", reply.describe()
    return body


def _partial(reply: Reply, names: list[str], failed: list[str]) -> dict[str, Any]:
    """A partial answer: each failed part null and described in _problems."""
    body = _json_answer(reply)
    assert list(body) == [*names, "_problems"], body
    assert reply.header_values(PARTIAL) == [",".join(failed)], reply.describe()
    assert reply.header("Cache-Control") == "no-store", reply.describe()
    assert sorted(body["_problems"]) == sorted(failed), body
    for name in failed:
        assert body[name] is None, body
        _part_problem(body["_problems"][name])
    return body


def _part_problem(
    problem: Any, status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """A part's problem: exactly the five standard members, well formed."""
    assert isinstance(problem, dict), problem
    assert set(problem) == {"type", "title", "status", "code", "detail"}, problem
    for member in ("type", "title", "code", "detail"):
        assert isinstance(problem[member], str) and problem[member], problem
    assert re.fullmatch(r"[a-z][a-z0-9_]*", problem["code"]), problem
    if status is not None:
        assert problem["status"] == status, problem
    if code is not None:
        assert problem["code"] == code, problem
    return problem


def _echo(token: str, path: str) -> dict[str, str]:
    """What a part with ECHO_FIELDS answers for a GET of `path` (its token appended)."""
    return {"method": "GET", "target": f"{path}?t={token}"}


def _calls(upstream: MisbehavingUpstream, token: str) -> dict[str, Received]:
    """This test's part requests by path; each path at most once."""
    found = upstream.received(token)
    by_path = {r.path: r for r in found}
    assert len(by_path) == len(found), [r.target for r in found]
    for received in found:
        assert received.method == "GET", received
    return by_path


def _raw_exchange(port: int, method: str, target: str, timeout: float = 10.0) -> bytes:
    """Everything the gateway sends back on a `Connection: close` request, to the close:
    what follows the head of a HEAD answer is a body, and must be nothing."""
    request = (
        f"{method} {target} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    received = b""
    ends = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request)
        while True:
            remaining = ends - time.monotonic()
            assert remaining > 0, f"no close within {timeout} s: {received!r}"
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                return received
            received += data


# -- 1. concurrency ---------------------------------------------------------------------


def test_parts_are_called_concurrently(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    started = time.perf_counter()
    reply = gateway.get(f"/c/concurrent?t={token}")
    elapsed = time.perf_counter() - started
    body = _whole(reply, ["a", "b", "c"])
    # Three parts of DELAY_SECONDS each: one after the other would take 0.9 s.
    assert DELAY_SECONDS <= elapsed < 0.8, (elapsed, reply.describe())
    calls = _calls(upstream, token)
    assert sorted(calls) == ["/up/delay/a", "/up/delay/b", "/up/delay/c"]
    for name in ("a", "b", "c"):
        # A part's JSON is merged as the upstream sent it: its echo of its own request.
        assert body[name]["method"] == "GET", body
        assert body[name]["target"] == f"/up/delay/{name}?t={token}", body


# -- 2. an optional part timing out -----------------------------------------------------


def test_optional_part_cut_at_the_route_deadline(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    started = time.perf_counter()
    reply = gateway.get(f"/c/optional-slow?t={token}")
    elapsed = time.perf_counter() - started
    body = _partial(reply, ["main", "slow"], ["slow"])
    assert body["main"] == _echo(token, "/up/ok/main")
    _part_problem(body["_problems"]["slow"], 504, "upstream_timeout")
    # Answered at the route's deadline, not when the slow part would have answered.
    assert SHORT_TIMEOUT - 0.05 <= elapsed < SHORT_TIMEOUT + 1.0, elapsed
    assert elapsed < SLOW_SECONDS
    assert sorted(_calls(upstream, token)) == ["/up/ok/main", "/up/slow/x"]
    _leaks(reply, upstream, closed_port)


def test_optional_part_past_its_upstreams_own_timeout(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    started = time.perf_counter()
    reply = gateway.get(f"/c/optional-brief?t={token}")
    elapsed = time.perf_counter() - started
    body = _partial(reply, ["main", "brief"], ["brief"])
    assert body["main"] == _echo(token, "/up/ok/main")
    _part_problem(body["_problems"]["brief"], 504, "upstream_timeout")
    # The upstream's own read timeout (0.3 s), well before the route's 5 s.
    assert elapsed < BRIEF_TIMEOUT + 1.0 + 0.5, elapsed
    assert sorted(_calls(upstream, token)) == ["/up/ok/main", "/up/slow/y"]
    _leaks(reply, upstream, closed_port)


# -- 3. an optional part failing each way ----------------------------------------------

OPTIONAL_FAILURES = {
    # behaviour: (status, code) of the part's problem
    "html500": (502, "upstream_unavailable"),
    "text503": (502, "upstream_unavailable"),
    "json404": (404, "not_found"),
    "html200": (502, "upstream_unavailable"),
    "huge": (502, "upstream_unavailable"),  # a declared length over max_part_bytes
    "big-json": (502, "upstream_unavailable"),  # chunked, over max_part_bytes once read
    "reset": (502, "upstream_unavailable"),
    "garbage": (502, "upstream_unavailable"),
    "redirect": (502, "upstream_unavailable"),
}


@pytest.mark.parametrize("kind", list(OPTIONAL_FAILURES))
def test_optional_part_failure_is_a_partial_answer(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str, kind: str
) -> None:
    status, code = OPTIONAL_FAILURES[kind]
    reply = gateway.get(f"/c/optional/{kind}?t={token}")
    body = _partial(reply, ["main", "extra"], ["extra"])
    assert body["main"] == _echo(token, "/up/ok/main")
    problem = _part_problem(body["_problems"]["extra"], status, code)
    if kind in ("huge", "big-json"):
        assert str(MAX_PART_BYTES) in problem["detail"], problem
    _leaks(reply, upstream, closed_port)
    assert b"jjjj" not in reply.body
    calls = _calls(upstream, token)
    assert sorted(calls) == sorted(["/up/ok/main", f"/up/{kind}/extra"])


def test_optional_part_refused_by_a_closed_port(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    reply = gateway.get(f"/c/optional-closed?t={token}")
    body = _partial(reply, ["main", "down"], ["down"])
    assert body["main"] == _echo(token, "/up/ok/main")
    _part_problem(body["_problems"]["down"], 502, "upstream_unavailable")
    _leaks(reply, upstream, closed_port)
    assert sorted(_calls(upstream, token)) == ["/up/ok/main"]


def test_optional_part_problem_json_keeps_only_its_standard_members(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    reply = gateway.get(f"/c/optional/problem422?t={token}")
    body = _partial(reply, ["main", "extra"], ["extra"])
    problem = _part_problem(body["_problems"]["extra"], 422, "unprocessable_content")
    assert problem["type"] == PROBLEM_422["type"]
    assert problem["title"] == PROBLEM_422["title"]
    assert problem["detail"] == PROBLEM_422["detail"]
    # Non-standard members (errors, balance) are the upstream's, not the answer's.
    assert b"balance" not in reply.body and b"must be an email" not in reply.body
    _leaks(reply, upstream, closed_port)


def test_an_optional_part_answering_a_json_array_is_merged_as_it_is(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/optional/json-array?t={token}")
    body = _whole(reply, ["main", "extra"])
    assert body == {"main": _echo(token, "/up/ok/main"), "extra": JSON_ARRAY}
    assert sorted(_calls(upstream, token)) == ["/up/json-array/extra", "/up/ok/main"]


def test_a_part_with_nan_is_not_json(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/optional/json-nan?t={token}")
    assert sorted(_calls(upstream, token)) == ["/up/json-nan/extra", "/up/ok/main"]
    _strict_json(reply.body)  # the answer is JSON, whatever became of the part
    body = _partial(reply, ["main", "extra"], ["extra"])
    _part_problem(body["_problems"]["extra"], 502, "upstream_unavailable")


def test_fields_keep_only_the_listed_members_and_need_an_object(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/fields?t={token}")
    body = _partial(reply, ["a", "arr", "arrf"], ["arrf"])
    assert body["a"] == {"method": "GET", "chunked": False}, body
    assert body["arr"] == JSON_ARRAY
    _part_problem(body["_problems"]["arrf"], 502, "upstream_unavailable")
    assert "object" in body["_problems"]["arrf"]["detail"]
    assert sorted(_calls(upstream, token)) == ["/up/json-array/x", "/up/json-array/y", "/up/ok/fa"]


# -- 4. a required part failing ----------------------------------------------------------

REQUIRED_FAILURES = {
    "html500": (502, "upstream_unavailable"),
    "slow": (504, "upstream_timeout"),
    "json404": (404, "not_found"),
    "problem422": (422, "unprocessable_content"),
}


@pytest.mark.parametrize("kind", list(REQUIRED_FAILURES))
def test_required_part_failure_fails_the_whole_answer(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str, kind: str
) -> None:
    status, code = REQUIRED_FAILURES[kind]
    path = f"/c/required/{kind}"
    started = time.perf_counter()
    reply = gateway.get(f"{path}?t={token}")
    elapsed = time.perf_counter() - started
    body = assert_problem(reply, status, code, path)
    assert reply.header("Cache-Control") == "no-store", reply.describe()
    assert PARTIAL.lower() not in reply.header_names
    # Every failed part is named, required or not; the one that answered is not.
    assert sorted(body["parts"]) == ["bad", "extra"], body
    _part_problem(body["parts"]["bad"], status, code)
    _part_problem(body["parts"]["extra"], 404, "not_found")
    assert "good" not in body and "bad" not in body and "_problems" not in body, body
    assert "bad" in body["detail"], body
    _leaks(reply, upstream, closed_port)
    assert b"must be an email" not in reply.body
    if kind == "slow":
        assert REQUIRED_TIMEOUT - 0.05 <= elapsed < REQUIRED_TIMEOUT + 1.0, elapsed
    calls = _calls(upstream, token)
    assert sorted(calls) == sorted(["/up/ok/good", f"/up/{kind}/bad", "/up/json404/extra"])


def test_required_part_refused_is_a_502_naming_only_it(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    reply = gateway.get(f"/c/required-closed?t={token}")
    body = assert_problem(reply, 502, "upstream_unavailable", "/c/required-closed")
    assert list(body["parts"]) == ["down"], body
    _part_problem(body["parts"]["down"], 502, "upstream_unavailable")
    _leaks(reply, upstream, closed_port)
    assert sorted(_calls(upstream, token)) == ["/up/ok/good"]


# -- 5. placeholders ---------------------------------------------------------------------

PARAM_VALUES = {
    # public path segment (as sent) -> the segment the part must carry
    "question_mark": ("a%3Fadmin%3Dtrue", "a%3Fadmin%3Dtrue"),
    "ampersand": ("a%26role%3Dadmin", "a%26role%3Dadmin"),
    "hash": ("x%23frag", "x%23frag"),
    "at_host": ("%40evil.example", "%40evil.example"),
    "userinfo": ("u%3Ap%40evil.example%3A80", "u%3Ap%40evil.example%3A80"),
    "dots_and_query": ("..%3Fx", "..%3Fx"),
    "space_utf8": ("a%20%C3%A9", "a%20%C3%A9"),
    "plus_equals": ("a+b=c", "a%2Bb%3Dc"),
}


@pytest.mark.parametrize(("sent", "expected"), list(PARAM_VALUES.values()), ids=list(PARAM_VALUES))
def test_a_route_parameter_fills_exactly_one_segment(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, sent: str, expected: str
) -> None:
    reply = gateway.get(f"/c/inject/{sent}?t={token}")
    _whole(reply, ["p"])
    received = upstream.only(token)
    assert received.header_values("Host") == [upstream.host_port]
    assert _upper_escapes(received.path).split("/") == ["", "up", "ok", "users", expected, "orders"]
    assert received.query.split("&") == [f"t={token}", "q=none", "limit=5", "fixed=1"]


QUERY_VALUES = {
    # a query value -> how it must stand inside one query value
    "ampersand_member": ("1&admin=true", "1%26admin%3Dtrue"),
    "hash": ("x#y", "x%23y"),
    "question_mark": ("?limit=1000", "%3Flimit%3D1000"),
    "encoded_slash": ("%2F", "%252F"),
    "slash_dotdot": ("../../admin", "..%2F..%2Fadmin"),
    "at_host": ("@evil.example", "%40evil.example"),
    "empty": ("", ""),
}


@pytest.mark.parametrize(("value", "expected"), list(QUERY_VALUES.values()), ids=list(QUERY_VALUES))
def test_a_query_placeholder_fills_exactly_one_query_value(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, value: str, expected: str
) -> None:
    sent = quote(value, safe="")
    reply = gateway.get(f"/c/inject/plain?t={token}&q={sent}&limit={sent}")
    _whole(reply, ["p"])
    received = upstream.only(token)
    assert received.header_values("Host") == [upstream.host_port]
    assert received.path == "/up/ok/users/plain/orders"
    members = received.query.split("&")
    assert [_upper_escapes(m) for m in members] == [
        f"t={token}",
        f"q={expected}",
        f"limit={expected}",
        "fixed=1",
    ]


PATH_QUERY_VALUES = {
    "slash_dotdot": ("../../admin", "..%2F..%2Fadmin"),
    "encoded_slash": ("%2F", "%252F"),
    "slash": ("a/b", "a%2Fb"),
    "absolute_url": ("http://evil.example/x", "http%3A%2F%2Fevil.example%2Fx"),
    "network_path": ("//evil.example", "%2F%2Fevil.example"),
    "at_host": ("@evil.example", "%40evil.example"),
    "query_and_fragment": ("x?y=1&z#w", "x%3Fy%3D1%26z%23w"),
    "dotdot_prefix": ("..x", "..x"),
}


@pytest.mark.parametrize(
    ("value", "expected"), list(PATH_QUERY_VALUES.values()), ids=list(PATH_QUERY_VALUES)
)
def test_a_query_value_in_a_path_fills_exactly_one_segment(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, value: str, expected: str
) -> None:
    reply = gateway.get(f"/c/by-query?name={quote(value, safe='')}&t={token}")
    body = _whole(reply, ["main", "named"])
    assert body["main"] == _echo(token, "/up/ok/main")
    calls = _calls(upstream, token)
    assert len(calls) == 2, calls
    named = next(r for r in calls.values() if r.path != "/up/ok/main")
    assert named.header_values("Host") == [upstream.host_port]
    assert _upper_escapes(named.path).split("/") == ["", "up", "ok", "named", expected, "x"]
    assert named.query == f"t={token}"


@pytest.mark.parametrize("query", ["name=..", "name=.", "name=", "name=%2E%2E", "other=1"], ids=str)
def test_an_unusable_path_value_is_refused_without_calling_the_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str, query: str
) -> None:
    optional = gateway.get(f"/c/by-query?{query}&t={token}")
    body = _partial(optional, ["main", "named"], ["named"])
    _part_problem(body["_problems"]["named"], 400, "bad_request")
    assert body["main"] == _echo(token, "/up/ok/main")
    assert sorted(_calls(upstream, token)) == ["/up/ok/main"]

    required_token = f"{token}r"
    required = gateway.get(f"/c/by-query-required?{query}&t={required_token}")
    problem = assert_problem(required, 400, "bad_request", "/c/by-query-required")
    assert list(problem["parts"]) == ["named"], problem
    _part_problem(problem["parts"]["named"], 400, "bad_request")
    assert upstream.received(required_token) == []


def test_a_path_parameter_fills_one_segment_of_its_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/files/a/b%3Fc/d?t={token}")
    _whole(reply, ["p"])
    received = upstream.only(token)
    assert _upper_escapes(received.path).split("/") == [
        "",
        "up",
        "ok",
        "files",
        "a%2Fb%3Fc%2Fd",
        "meta",
    ]
    assert received.query == f"t={token}"


def test_identity_values_fill_their_places_encoded(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    subject = "../../admin?role=admin#x@evil.example/z"
    tenant = "t-1&tenant=other"
    bearer = mint_token(
        SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=subject,
        roles=["member"],
        tenant_id=tenant,
    )
    reply = gateway.get(f"/c/me?t={token}", [("Authorization", f"Bearer {bearer}")])
    _whole(reply, ["profile"])
    received = upstream.only(token)
    assert received.header_values("Host") == [upstream.host_port]
    assert _upper_escapes(received.path).split("/") == [
        "",
        "up",
        "ok",
        "users",
        "..%2F..%2Fadmin%3Frole%3Dadmin%23x%40evil.example%2Fz",
        "profile",
    ]
    assert received.query.split("&") == ["tenant=t-1%26tenant%3Dother", f"t={token}"]


def test_a_dot_dot_subject_is_refused_without_calling_the_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    bearer = mint_token(SECRET, issuer=ISSUER, audience=AUDIENCE, subject="..", tenant_id="t")
    reply = gateway.get(f"/c/me?t={token}", [("Authorization", f"Bearer {bearer}")])
    body = assert_problem(reply, 403, "forbidden", "/c/me")
    assert list(body["parts"]) == ["profile"], body
    _part_problem(body["parts"]["profile"], 403, "forbidden")
    assert upstream.received(token) == []


# -- 6. headers every part carries ------------------------------------------------------

DROPPED = ("if-none-match", "if-modified-since", "range", "if-range", API_KEY_HEADER.lower())


def test_every_part_carries_the_identity_and_the_request_id_with_a_jwt(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    subject = f"user-{token}"
    bearer = mint_token(
        SECRET,
        issuer=ISSUER,
        audience=AUDIENCE,
        subject=subject,
        roles=["member", "reader"],
        tenant_id="tenant-7",
    )
    request_id = f"rid-{token}"
    reply = gateway.get(
        f"/c/who?t={token}",
        [
            ("Authorization", f"Bearer {bearer}"),
            ("X-Request-ID", request_id),
            ("traceparent", TRACEPARENT),
            ("X-User-Id", "admin"),
            ("X-Tenant-Id", "other-tenant"),
            ("X-Consumer-Id", "ops"),
            ("X-Forwarded-For", "203.0.113.66"),
            ("Accept", "text/html"),
            ("Accept-Encoding", "gzip, br"),
            ("If-None-Match", '"abc"'),
            ("If-Modified-Since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("Range", "bytes=0-10"),
            ("X-Custom", "kept"),
        ],
    )
    _whole(reply, ["a", "b"])
    assert reply.header("X-Request-ID") == request_id
    calls = _calls(upstream, token)
    assert sorted(calls) == ["/up/ok/who-a", "/up/ok/who-b"]
    for received in calls.values():
        assert received.header_values("Host") == [upstream.host_port]
        assert received.header_values("Authorization") == [f"Bearer {bearer}"]
        assert received.header_values("X-Request-ID") == [request_id]
        assert received.header_values("traceparent") == [TRACEPARENT]
        assert received.header_values("X-User-Id") == [subject]
        assert received.header_values("X-User-Roles") == ["member,reader"]
        assert received.header_values("X-Tenant-Id") == ["tenant-7"]
        assert received.header_values("X-Auth-Method") == ["jwt"]
        assert received.header_values("X-Consumer-Id") == []
        assert received.header_values("X-Forwarded-For") == [LOOPBACK]
        assert received.header_values("X-Forwarded-Proto") == ["http"]
        assert received.header_values("X-Forwarded-Host") == [gateway.host_port]
        assert received.header_values("Accept") == ["application/json"]
        assert received.header_values("Accept-Encoding") == ["identity"]
        assert received.header_values("X-Custom") == ["kept"]
        for name in DROPPED:
            assert name not in received.header_names, received.headers


def test_every_part_carries_the_key_identity_but_never_the_key(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    key = KEYS["reporting"]
    reply = gateway.get(
        f"/c/keyed?t={token}",
        [
            (API_KEY_HEADER, key.header_value),
            ("traceparent", "00-not-a-trace-01"),
            ("X-User-Id", "admin"),
        ],
    )
    _whole(reply, ["a", "consumer"])
    request_id = reply.header("X-Request-ID")
    calls = _calls(upstream, token)
    assert sorted(calls) == ["/up/ok/consumers/reporting", "/up/ok/keyed-a"]
    for received in calls.values():
        assert received.header_values("X-Request-ID") == [request_id]
        assert received.header_values("X-Consumer-Id") == [key.id]
        assert received.header_values("X-Auth-Method") == ["api_key"]
        assert received.header_values("X-User-Roles") == list(key.roles)
        assert received.header_values("X-User-Id") == []
        assert "traceparent" not in received.header_names  # not a valid one
        assert API_KEY_HEADER.lower() not in received.header_names
        assert key.header_value not in repr(received.headers)
        assert key.raw not in received.target


def test_a_key_sent_to_a_jwt_and_key_route_never_reaches_a_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    key = KEYS["ops"]
    bearer = mint_token(SECRET, issuer=ISSUER, audience=AUDIENCE, roles=["member"])
    reply = gateway.get(
        f"/c/who?t={token}",
        [("Authorization", f"Bearer {bearer}"), (API_KEY_HEADER, key.header_value)],
    )
    _whole(reply, ["a", "b"])
    calls = _calls(upstream, token)
    assert len(calls) == 2
    for received in calls.values():
        assert API_KEY_HEADER.lower() not in received.header_names
        assert key.header_value not in repr(received.headers)
        assert received.header_values("X-Auth-Method") == ["jwt"]


def test_unauthenticated_composed_request_calls_no_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/who?t={token}", [(API_KEY_HEADER, "not-a-key")])
    assert_problem(reply, 401, "unauthorized", "/c/who")
    assert upstream.received(token) == []


# -- 7. one rate-limit hit per composed request ----------------------------------------


def test_a_composed_request_is_one_rate_limit_hit(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    remaining = []
    for index in range(3):
        mark = f"{token}n{index}"
        reply = gateway.get(f"/c/limited?t={mark}")
        body = _whole(reply, ["a", "b"])
        assert body == {
            "a": _echo(mark, "/up/ok/limited-a"),
            "b": _echo(mark, "/up/ok/limited-b"),
        }
        assert reply.header("X-RateLimit-Limit") == "3", reply.describe()
        remaining.append(reply.header("X-RateLimit-Remaining"))
        assert len(upstream.received(mark)) == 2
    assert remaining == ["2", "1", "0"]
    refused = gateway.get(f"/c/limited?t={token}n3")
    assert_problem(refused, 429, "rate_limited", "/c/limited")
    retry_after = refused.header("Retry-After")
    assert retry_after is not None and 1 <= int(retry_after) <= 60, refused.describe()
    assert refused.header("X-RateLimit-Remaining") == "0"
    assert upstream.received(f"{token}n3") == []


# -- 8. the breaker of one part's upstream --------------------------------------------


def _breaker_rounds(
    gateway: Gateway,
    path: str,
    token: str,
    classify: Callable[[Reply, str], str],
    rounds: int = 6,
) -> list[str]:
    """What each of `rounds` requests met at the flaky part: refused or breaker_open."""
    seen = []
    for index in range(rounds):
        seen.append(classify(gateway.get(f"{path}?t={token}n{index}"), f"{token}n{index}"))
    return seen


def test_an_open_breaker_fails_an_optional_part_at_once(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    def classify(reply: Reply, mark: str) -> str:
        body = _partial(reply, ["main", "flaky"], ["flaky"])
        assert body["main"] == _echo(mark, "/up/ok/main")
        assert sorted(_calls(upstream, mark)) == ["/up/ok/main"]
        _leaks(reply, upstream, closed_port)
        problem = body["_problems"]["flaky"]
        if problem["status"] == 502:
            _part_problem(problem, 502, "upstream_unavailable")
            return "refused"
        _part_problem(problem, 503, "service_unavailable")
        return "breaker_open"

    seen = _breaker_rounds(gateway, "/c/breaker-optional", token, classify)
    # Each worker has its own breaker: each is opened by one refusal, never more.
    assert seen[0] == "refused", seen
    assert seen.count("refused") <= WORKERS, seen
    assert seen[-1] == "breaker_open", seen


def test_an_open_breaker_fails_a_required_part_with_503_and_retry_after(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    def classify(reply: Reply, mark: str) -> str:
        assert sorted(_calls(upstream, mark)) == ["/up/ok/main"]
        _leaks(reply, upstream, closed_port)
        if reply.status == 502:
            body = assert_problem(reply, 502, "upstream_unavailable", "/c/breaker-required")
            assert "retry-after" not in reply.header_names
            outcome = "refused"
        else:
            body = assert_problem(reply, 503, "service_unavailable", "/c/breaker-required")
            retry_after = reply.header("Retry-After")
            assert retry_after and 1 <= int(retry_after) <= BREAKER_OPEN_SECONDS, reply.describe()
            outcome = "breaker_open"
        assert list(body["parts"]) == ["flaky"], body
        _part_problem(body["parts"]["flaky"], body["status"], body["code"])
        return outcome

    seen = _breaker_rounds(gateway, "/c/breaker-required", token, classify)
    assert seen[0] == "refused", seen
    assert seen.count("refused") <= WORKERS, seen
    assert seen[-1] == "breaker_open", seen


def test_a_part_cut_by_the_route_deadline_does_not_open_its_upstreams_breaker(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    # The route's deadline (0.5 s) is shorter than the upstream's own (4 s): the cut is
    # the route's doing, not a failure of the upstream, whose breaker opens after one.
    for index in range(2 * WORKERS):
        mark = f"{token}s{index}"
        reply = gateway.get(f"/c/guarded-slow?t={mark}")
        body = _partial(reply, ["main", "slow"], ["slow"])
        _part_problem(body["_problems"]["slow"], 504, "upstream_timeout")
        assert sorted(_calls(upstream, mark)) == ["/up/ok/main", "/up/slow/g"]
    for index in range(2 * WORKERS):
        mark = f"{token}g{index}"
        reply = gateway.get(f"/c/guarded-ok?t={mark}")
        body = _whole(reply, ["g"])
        assert body["g"] == _echo(mark, "/up/ok/g")
        assert sorted(_calls(upstream, mark)) == ["/up/ok/g"]


def test_a_part_path_goes_after_its_upstreams_base_path(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/based/%40evil.example%3Fx?t={token}")
    body = _whole(reply, ["p"])
    received = upstream.only(token)
    assert received.header_values("Host") == [upstream.host_port]
    assert _upper_escapes(received.path) == "/up/ok/based/items/%40evil.example%3Fx"
    assert received.query == f"t={token}"
    assert body["p"] == {"method": "GET", "target": received.target}


def _link_values(reply: Reply) -> list[str]:
    """Every link-value of every Link field (RFC 8288 §3: a comma-separated list)."""
    values = []
    for field_value in reply.header_values("Link"):
        values += [v.strip() for v in re.findall(r'(?:<[^>]*>|"[^"]*"|[^,])+', field_value)]
    return values


def test_part_links_point_at_the_gateway_never_the_upstream(
    gateway: Gateway, upstream: MisbehavingUpstream, closed_port: int, token: str
) -> None:
    reply = gateway.get(f"/c/linked?t={token}")
    body = _whole(reply, ["main", "links"])
    assert body["links"] == {"data": []}
    links = _link_values(reply)
    # The link behaviour sends three links: next and help in one field, first in another.
    assert len(links) == 3, reply.describe()
    targets = sorted(re.match(r"<([^>]*)>", link).group(1) for link in links)  # type: ignore[union-attr]
    assert targets[-1] == "https://docs.example.org/help"  # an outside link, as written
    for target in targets[:-1]:
        assert target.startswith(f"http://{gateway.host_port}/"), targets
    assert sorted(_calls(upstream, token)) == ["/up/link/x", "/up/ok/main"]
    _leaks(reply, upstream, closed_port)


def test_every_part_link_is_anchored_at_its_part(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    reply = gateway.get(f"/c/linked?t={token}")
    _whole(reply, ["main", "links"])
    links = _link_values(reply)
    assert len(links) == 3, reply.describe()
    for link in links:
        assert re.search(r';\s*anchor="#/links"\s*(;|$)', link), links


# -- 9. HEAD ---------------------------------------------------------------------------

COMPARED = ("content-type", "content-length", "cache-control", PARTIAL.lower())


def _head_and_get(gateway: Gateway, target: str) -> tuple[Reply, Reply]:
    got = gateway.get(target)
    head = gateway.request("HEAD", target)
    for name in COMPARED:
        assert head.header_values(name) == got.header_values(name), (name, head.describe())
    assert head.status == got.status
    return got, head


def test_head_on_a_partial_answer_has_its_headers_and_no_body(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    got, head = _head_and_get(gateway, f"/c/fields?t={token}")
    _partial(got, ["a", "arr", "arrf"], ["arrf"])
    assert head.header_values(PARTIAL) == ["arrf"]
    assert int(head.header("Content-Length") or "0") == len(got.body) > 0
    # Every part is read with GET, for the HEAD too: twice each.
    calls = upstream.received(token)
    assert sorted(r.path for r in calls) == sorted(
        ["/up/ok/fa", "/up/json-array/x", "/up/json-array/y"] * 2
    )
    assert {r.method for r in calls} == {"GET"}
    raw = _raw_exchange(gateway.port, "HEAD", f"/c/fields?t={token}x")
    head_bytes, _, after = raw.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 200 "), raw
    assert after == b"", raw


def test_head_on_a_failed_answer_has_its_headers_and_no_body(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    got, head = _head_and_get(gateway, f"/c/required/html500?t={token}")
    assert_problem(got, 502, "upstream_unavailable", "/c/required/html500")
    assert head.media_type == PROBLEM_JSON
    raw = _raw_exchange(gateway.port, "HEAD", f"/c/required/html500?t={token}x")
    head_bytes, _, after = raw.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 502 "), raw
    assert after == b"", raw


def test_head_on_a_whole_answer(
    gateway: Gateway, upstream: MisbehavingUpstream, token: str
) -> None:
    got, head = _head_and_get(gateway, f"/c/optional/json-array?t={token}")
    _whole(got, ["main", "extra"])
    assert json.loads(got.body)["extra"] == JSON_ARRAY
    assert head.header("Cache-Control") == "private"
    assert PARTIAL.lower() not in head.header_names
    assert len(upstream.received(token)) == 4
