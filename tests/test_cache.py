"""The response cache in-process: what is kept, for whom, for how long, and when it is
dropped. The stores themselves are in test_cache_store.py; across real processes, in
tests/integration/test_cache.py."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
import respx
from flask.testing import FlaskClient

from gateway.cache.control import directives, verdict, wants
from gateway.config import ConfigError, load_config_text
from tests.app_support import ClientFactory
from tests.tokens import mint_token

SECRET = "cache-secret-" + "x" * 32
ISSUER, AUDIENCE = "https://issuer.test", "gateway"
USERS = "http://users.internal"

CONFIG = f"""\
version: 1
auth:
  jwt: {{issuer: "{ISSUER}", audience: {AUDIENCE}, algorithms: [HS256], secret: "{SECRET}"}}
rate_limits: {{default: []}}
upstreams:
  users: {{url: "{USERS}", retries: 0}}
routes:
  - name: users.get
    path: /api/users/{{user_id}}
    methods: [GET, HEAD]
    upstream: users
    upstream_path: /users/{{user_id}}
    auth: [jwt]
    cache: {{ttl: 30}}
  - name: users.write
    path: /api/users/{{user_id}}
    methods: [PATCH, DELETE]
    upstream: users
    upstream_path: /users/{{user_id}}
    auth: [jwt]
  - name: catalog
    path: /api/catalog
    methods: [GET]
    upstream: users
    upstream_path: /catalog
    auth: public
    cache: {{ttl: 30, vary: [Accept-Version]}}
  - name: tenant.report
    path: /api/report
    methods: [GET]
    upstream: users
    upstream_path: /report
    auth: [jwt]
    cache: {{ttl: 30, scope: tenant}}
  - name: board
    path: /api/board
    methods: [GET]
    auth: public
    cache: {{ttl: 30}}
    compose:
      parts:
        news: {{upstream: users, path: /news}}
        weather: {{upstream: users, path: /weather, required: false}}
  - name: uncached
    path: /api/plain
    methods: [GET]
    upstream: users
    upstream_path: /plain
    auth: public
"""


@pytest.fixture
def client(gateway_client: ClientFactory) -> FlaskClient:
    return gateway_client(CONFIG)


def bearer(subject: str = "u1", **claims: Any) -> dict[str, str]:
    token = mint_token(SECRET, issuer=ISSUER, audience=AUDIENCE, subject=subject, **claims)
    return {"Authorization": f"Bearer {token}"}


def counting(router: respx.MockRouter, path: str, **answer: Any) -> respx.Route:
    answer.setdefault("json", {"path": path})
    return router.get(f"{USERS}{path}").mock(return_value=httpx.Response(200, **answer))


def status_of(response: Any) -> str:
    return str(response.headers.get("Cache-Status", ""))


# -- what HTTP says -------------------------------------------------------------------


def test_directives_are_parsed_with_quoted_arguments() -> None:
    parsed = directives(['public, max-age=60, no-cache="Set-Cookie, X"', "S-MAXAGE=5"])
    assert parsed == {"public": None, "max-age": "60", "no-cache": "Set-Cookie, X", "s-maxage": "5"}


@pytest.mark.parametrize(
    ("cache_control", "scope", "storable", "lifetime"),
    [
        ([], "public", True, 30),
        (["max-age=10"], "public", True, 10),
        (["max-age=100"], "public", True, 30),  # the route's ttl is the most
        (["max-age=100, s-maxage=5"], "public", True, 5),
        (["max-age=7, s-maxage=5"], "identity", True, 7),  # a private cache: no s-maxage
        (["private, max-age=10"], "public", False, 0),
        (["private, max-age=10"], "tenant", False, 0),
        (["private, max-age=10"], "identity", True, 10),
        (["no-store"], "identity", False, 0),
        (["max-age=oops"], "public", False, 0),  # invalid: stale, and nothing to check it
    ],
)
def test_verdict_follows_cache_control_and_scope(
    cache_control: list[str], scope: Any, storable: bool, lifetime: int
) -> None:
    judged = verdict(
        200, cache_control, [], scope=scope, ttl=30, has_validator=False, sets_cookie=False
    )
    assert (judged.storable, judged.lifetime) == (storable, lifetime)


def test_verdict_keeps_no_cache_answers_only_with_a_validator() -> None:
    kept = verdict(
        200, ["no-cache"], [], scope="public", ttl=30, has_validator=True, sets_cookie=False
    )
    assert (kept.storable, kept.lifetime) == (True, 0)
    dropped = verdict(
        200, ["no-cache"], [], scope="public", ttl=30, has_validator=False, sets_cookie=False
    )
    assert not dropped.storable


def test_verdict_refuses_cookies_vary_star_and_other_statuses() -> None:
    def judged(**kw: Any) -> str:
        args: dict[str, Any] = {"scope": "public", "ttl": 30, "has_validator": False}
        args["sets_cookie"] = kw.pop("sets_cookie", False)
        return verdict(kw.pop("status", 200), [], kw.pop("vary", []), **args).reason

    assert judged(sets_cookie=True) == "set-cookie"
    assert judged(vary=["Accept, *"]) == "vary-star"
    assert judged(status=404) == "status"


def test_request_directives() -> None:
    assert wants(["no-cache"], []).revalidate
    assert wants(["max-age=0"], []).revalidate
    assert wants([], ["no-cache"]).revalidate
    assert not wants(["max-age=5"], ["no-cache"]).revalidate  # Pragma only without it
    assert wants(["no-store"], []).no_store


# -- configuration --------------------------------------------------------------------


def test_a_cached_route_with_writes_is_refused_with_its_line() -> None:
    text = CONFIG.replace("methods: [GET, HEAD]", "methods: [GET, POST]")
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "routes.yaml")
    assert "a cached route answers GET and HEAD only, not POST" in str(caught.value)
    assert ":14:" in str(caught.value) or "line 14" in str(caught.value)


def test_a_public_route_cannot_keep_answers_per_identity() -> None:
    text = CONFIG.replace(
        "cache: {ttl: 30, vary: [Accept-Version]}", "cache: {ttl: 30, scope: identity}"
    )
    with pytest.raises(
        ConfigError, match="a public route has no caller to keep answers per identity"
    ):
        load_config_text(text, "routes.yaml")


def test_a_memory_budget_smaller_than_its_largest_answer_is_refused() -> None:
    text = CONFIG.replace(
        "rate_limits: {default: []}",
        "rate_limits: {default: []}\ncache: {max_bytes: 4096, max_entry_bytes: 8192}",
    )
    with pytest.raises(
        ConfigError,
        match=r"cache.max_entry_bytes \(8192\) must be less than cache.max_bytes \(4096\)",
    ):
        load_config_text(text, "routes.yaml")
    redis = text.replace("cache: {max", "cache: {storage: 'redis://127.0.0.1:6379/0', max")
    assert load_config_text(redis, "routes.yaml").cache.max_bytes == 4096  # Redis: no budget


def test_scope_defaults_to_identity_and_public_by_the_routes_auth() -> None:
    config = load_config_text(CONFIG, "routes.yaml")
    scopes = {r.name: r.cache.scope for r in config.routes if r.cache}
    assert scopes == {
        "users.get": "identity",
        "catalog": "public",
        "tenant.report": "tenant",
        "board": "public",
    }


# -- hits and misses --------------------------------------------------------------------


def test_a_second_read_is_a_hit_with_age_and_cache_status(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/users/7", headers={"ETag": '"v1"'})
    first = client.get("/api/users/7", headers=bearer())
    second = client.get("/api/users/7", headers=bearer())
    assert route.call_count == 1
    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json() == {"path": "/users/7"}
    assert status_of(first) == "gateway; fwd=uri-miss; fwd-status=200; stored"
    assert status_of(second).startswith("gateway; hit; ttl=")
    assert second.headers["Age"] == "0"
    assert second.headers["ETag"] == '"v1"'
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]


def test_uncached_routes_have_no_cache_status(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/plain")
    client.get("/api/plain")
    answer = client.get("/api/plain")
    assert route.call_count == 2
    assert "Cache-Status" not in answer.headers


def test_two_callers_never_share_an_identity_scoped_answer(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["X-User-Id"])
        return httpx.Response(200, json={"for": request.headers["X-User-Id"]})

    upstream.get(f"{USERS}/users/7").mock(side_effect=answer)
    for subject in ("alice", "bob", "alice", "bob"):
        body = client.get("/api/users/7", headers=bearer(subject)).get_json()
        assert body == {"for": subject}
    assert seen == ["alice", "bob"]
    # the same subject with other roles is told apart too: the upstream hears the roles
    client.get("/api/users/7", headers=bearer("alice", role="admin"))
    assert seen == ["alice", "bob", "alice"]


def test_tenant_scope_shares_within_a_tenant_and_skips_callers_without_one(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/report")
    client.get("/api/report", headers=bearer("a", tenant_id="t1"))
    shared = client.get("/api/report", headers=bearer("b", tenant_id="t1"))
    assert status_of(shared).startswith("gateway; hit")
    client.get("/api/report", headers=bearer("c", tenant_id="t2"))
    assert route.call_count == 2
    lone = client.get("/api/report", headers=bearer("d"))
    assert status_of(lone) == "gateway; fwd=bypass; detail=no-tenant"
    client.get("/api/report", headers=bearer("d"))
    assert route.call_count == 4


def test_configured_vary_fields_key_separate_copies(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.get(f"{USERS}/catalog").mock(
        side_effect=lambda r: httpx.Response(200, json={"v": r.headers.get("Accept-Version")})
    )
    one = client.get("/api/catalog", headers={"Accept-Version": "1"}).get_json()
    two = client.get("/api/catalog", headers={"Accept-Version": "2"}).get_json()
    again = client.get("/api/catalog", headers={"Accept-Version": "1"}).get_json()
    assert (one, two, again) == ({"v": "1"}, {"v": "2"}, {"v": "1"})
    assert route.call_count == 2


def test_the_upstreams_vary_picks_variants(client: FlaskClient, upstream: respx.MockRouter) -> None:
    route = upstream.get(f"{USERS}/catalog").mock(
        side_effect=lambda r: httpx.Response(
            200,
            json={"lang": r.headers.get("Accept-Language")},
            headers={"Vary": "Accept-Language"},
        )
    )
    for lang in ("en", "fr", "en", "fr"):
        body = client.get("/api/catalog", headers={"Accept-Language": lang}).get_json()
        assert body == {"lang": lang}
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("headers", "status", "detail"),
    [
        ({"Cache-Control": "no-store"}, 200, "no-store"),
        ({"Set-Cookie": "s=1"}, 200, "set-cookie"),
        ({"Vary": "*"}, 200, "vary-star"),
        ({}, 404, "status"),
    ],
)
def test_answers_that_must_not_be_kept_are_fetched_each_time(
    client: FlaskClient,
    upstream: respx.MockRouter,
    headers: dict[str, str],
    status: int,
    detail: str,
) -> None:
    route = upstream.get(f"{USERS}/catalog").mock(
        return_value=httpx.Response(status, json={"x": 1}, headers=headers)
    )
    client.get("/api/catalog")
    answer = client.get("/api/catalog")
    assert route.call_count == 2
    assert answer.status_code == status
    assert status_of(answer).endswith(f"detail={detail}")


def test_a_private_answer_is_not_kept_for_everyone(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/catalog", headers={"Cache-Control": "private, max-age=60"})
    client.get("/api/catalog")
    client.get("/api/catalog")
    assert route.call_count == 2
    kept = counting(upstream, "/users/1", headers={"Cache-Control": "private, max-age=60"})
    client.get("/api/users/1", headers=bearer())
    client.get("/api/users/1", headers=bearer())
    assert kept.call_count == 1  # identity scope: a private cache of one caller


def test_max_age_shortens_the_ttl(
    client: FlaskClient, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    route = counting(upstream, "/catalog", headers={"Cache-Control": "max-age=5"})
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    client.get("/api/catalog")
    monkeypatch.setattr(time, "time", lambda: now + 4)
    assert client.get("/api/catalog").headers["Age"] == "4"
    monkeypatch.setattr(time, "time", lambda: now + 6)
    client.get("/api/catalog")
    assert route.call_count == 2


def test_the_client_can_ask_for_a_fresh_answer(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/catalog")
    client.get("/api/catalog")
    answer = client.get("/api/catalog", headers={"Cache-Control": "no-cache"})
    assert route.call_count == 2
    assert status_of(answer).startswith("gateway; fwd=request")


def test_a_range_request_bypasses_the_cache(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/catalog")
    client.get("/api/catalog")
    answer = client.get("/api/catalog", headers={"Range": "bytes=0-3"})
    assert route.call_count == 2
    assert status_of(answer) == "gateway; fwd=bypass; detail=range"


def test_head_is_answered_from_a_kept_get(client: FlaskClient, upstream: respx.MockRouter) -> None:
    route = counting(upstream, "/users/3")
    full = client.get("/api/users/3", headers=bearer())
    head = client.head("/api/users/3", headers=bearer())
    assert route.call_count == 1
    assert head.status_code == 200 and head.data == b""
    assert head.headers["Content-Length"] == full.headers["Content-Length"]


# -- conditional requests ----------------------------------------------------------------


def test_if_none_match_is_answered_304_from_the_cache(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(
        upstream, "/users/7", headers={"ETag": '"v1"', "Cache-Control": "private, max-age=10"}
    )
    client.get("/api/users/7", headers=bearer())
    answer = client.get("/api/users/7", headers={**bearer(), "If-None-Match": '"v1"'})
    assert route.call_count == 1
    assert answer.status_code == 304 and answer.data == b""
    assert answer.headers["ETag"] == '"v1"'
    assert answer.headers["Cache-Control"] == "private, max-age=10"
    other = client.get("/api/users/7", headers={**bearer(), "If-None-Match": '"v0"'})
    assert other.status_code == 200


def test_a_miss_with_if_none_match_fetches_the_whole_answer_and_answers_304(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/users/8", headers={"ETag": '"v1"'})
    answer = client.get("/api/users/8", headers={**bearer(), "If-None-Match": 'W/"v1"'})
    assert answer.status_code == 304
    assert "if-none-match" not in route.calls.last.request.headers
    assert client.get("/api/users/8", headers=bearer()).get_json() == {"path": "/users/8"}
    assert route.call_count == 1


def test_a_stale_answer_is_revalidated_with_its_etag(
    client: FlaskClient, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(
        [
            httpx.Response(
                200, json={"v": 1}, headers={"ETag": '"v1"', "Cache-Control": "max-age=1"}
            ),
            httpx.Response(304, headers={"ETag": '"v1"', "Cache-Control": "max-age=1"}),
        ]
    )
    route = upstream.get(f"{USERS}/users/9").mock(side_effect=lambda r: next(answers))
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    client.get("/api/users/9", headers=bearer())
    monkeypatch.setattr(time, "time", lambda: now + 2)
    answer = client.get("/api/users/9", headers=bearer())
    assert route.call_count == 2
    assert route.calls.last.request.headers["If-None-Match"] == '"v1"'
    assert answer.status_code == 200 and answer.get_json() == {"v": 1}
    assert status_of(answer) == "gateway; fwd=stale; fwd-status=304; stored"
    assert (
        client.get("/api/users/9", headers=bearer())
        .headers["Cache-Status"]
        .startswith("gateway; hit")
    )
    assert route.call_count == 2


# -- invalidation ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "DELETE"])
def test_an_unsafe_method_drops_the_paths_answers(
    client: FlaskClient, upstream: respx.MockRouter, method: str
) -> None:
    route = counting(upstream, "/users/5")
    upstream.route(method=method, url=f"{USERS}/users/5").mock(return_value=httpx.Response(204))
    client.get("/api/users/5", headers=bearer("alice"))
    client.get("/api/users/5", headers=bearer("bob"))
    client.open("/api/users/5", method=method, headers=bearer("alice"))
    again = client.get("/api/users/5", headers=bearer("bob"))
    assert status_of(again).startswith("gateway; fwd=uri-miss")
    assert route.call_count == 3


def test_a_failed_write_keeps_the_answers(client: FlaskClient, upstream: respx.MockRouter) -> None:
    route = counting(upstream, "/users/5")
    upstream.patch(f"{USERS}/users/5").mock(
        return_value=httpx.Response(412, json={"title": "Precondition Failed", "status": 412})
    )
    client.get("/api/users/5", headers=bearer())
    refused = client.patch("/api/users/5", headers={**bearer(), "If-Match": '"old"'}, json={})
    assert refused.status_code == 412
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert status_of(client.get("/api/users/5", headers=bearer())).startswith("gateway; hit")
    assert route.call_count == 1


# -- concurrency -------------------------------------------------------------------------


def test_concurrent_misses_make_one_upstream_call(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(CONFIG)
    release = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return httpx.Response(200, json={"n": 1})

    route = upstream.get(f"{USERS}/catalog").mock(side_effect=slow)
    results: list[tuple[int, str]] = []

    def read() -> None:
        answer = client.application.test_client().get("/api/catalog")
        results.append((answer.status_code, status_of(answer)))

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(client.application.gateway.cache.flights) == 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    time.sleep(0.2)  # the others reach the flight and wait
    release.set()
    for thread in threads:
        thread.join(10)
    assert route.call_count == 1
    assert [code for code, _ in results] == [200] * 6
    assert sum("collapsed" in status for _, status in results) == 5


def test_the_answer_body_is_the_kept_one_byte_for_byte(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    body = json.dumps({"name": "Zoë", "n": list(range(50))}).encode()
    upstream.get(f"{USERS}/catalog").mock(
        return_value=httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    )
    assert client.get("/api/catalog").data == body
    assert client.get("/api/catalog").data == body


def test_a_whole_composed_answer_is_kept_and_a_partial_one_is_not(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    news = counting(upstream, "/news")
    weather = upstream.get(f"{USERS}/weather").mock(return_value=httpx.Response(503))
    partial = client.get("/api/board")
    assert partial.headers["Gateway-Partial"] == "weather"
    assert status_of(partial).endswith("detail=partial")
    weather.mock(return_value=httpx.Response(200, json={"sun": True}))
    whole = client.get("/api/board")
    kept = client.get("/api/board")
    assert status_of(whole).endswith("stored")
    # The composed answer says `private` to the caches after the gateway; the route's
    # scope (public) is what decides here.
    assert kept.headers["Cache-Control"] == "private"
    assert status_of(kept).startswith("gateway; hit")
    assert (
        kept.get_json() == whole.get_json() == {"news": {"path": "/news"}, "weather": {"sun": True}}
    )
    assert (news.call_count, weather.call_count) == (2, 2)


# -- what the review found ---------------------------------------------------------------


def test_the_upstreams_vary_on_a_field_the_gateway_sets_keeps_callers_apart(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    """The client's own X-User-Id never reaches the upstream: the variant is chosen by
    the value the gateway sends."""
    upstream.get(f"{USERS}/report").mock(
        side_effect=lambda r: httpx.Response(
            200, json={"for": r.headers["X-User-Id"]}, headers={"Vary": "X-User-Id"}
        )
    )
    alice = client.get("/api/report", headers=bearer("alice", tenant_id="t1"))
    bob = client.get("/api/report", headers={**bearer("bob", tenant_id="t1"), "X-User-Id": "alice"})
    again = client.get("/api/report", headers=bearer("bob", tenant_id="t1"))
    assert (alice.get_json(), bob.get_json()) == ({"for": "alice"}, {"for": "bob"})
    assert again.get_json() == {"for": "bob"} and status_of(again).startswith("gateway; hit")


def test_an_answer_varying_on_the_request_id_is_not_kept(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = counting(upstream, "/catalog", headers={"Vary": "X-Request-ID"})
    client.get("/api/catalog")
    answer = client.get("/api/catalog")
    assert route.call_count == 2 and status_of(answer).endswith("detail=vary-request")


def test_the_clients_host_is_part_of_the_key_even_with_a_public_url(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(
        CONFIG.replace("version: 1\n", "version: 1\ngateway: {public_url: 'https://api.test'}\n")
    )
    upstream.get(f"{USERS}/catalog").mock(
        side_effect=lambda r: httpx.Response(200, json={"host": r.headers["X-Forwarded-Host"]})
    )
    evil = client.get("/api/catalog", headers={"Host": "evil.example"})
    good = client.get("/api/catalog", headers={"Host": "api.test"})
    assert evil.get_json() == {"host": "evil.example"}
    assert good.get_json() == {"host": "api.test"}


@pytest.mark.parametrize(
    ("request_headers", "answer_headers"),
    [({"Cache-Control": "max-age=\u00b2"}, []), ({}, [(b"Age", b"\xb9")])],
)
def test_digits_that_are_not_ascii_are_no_500(
    client: FlaskClient,
    upstream: respx.MockRouter,
    request_headers: dict[str, str],
    answer_headers: list[tuple[bytes, bytes]],
) -> None:
    counting(upstream, "/catalog", headers=answer_headers)
    assert client.get("/api/catalog", headers=request_headers).status_code == 200
    assert client.get("/api/catalog", headers=request_headers).status_code == 200


def test_a_semicolon_does_not_hide_the_next_directive() -> None:
    assert "private" in directives(["max-age=60;private"])


def test_a_read_that_began_before_a_write_does_not_keep_what_it_read(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    started, release = threading.Event(), threading.Event()
    version = {"v": 1}

    def read(request: httpx.Request) -> httpx.Response:
        seen = dict(version)
        started.set()
        release.wait(5)
        return httpx.Response(200, json=seen)

    def write(request: httpx.Request) -> httpx.Response:
        version["v"] = 2
        return httpx.Response(204)

    upstream.get(f"{USERS}/users/4").mock(side_effect=read)
    upstream.patch(f"{USERS}/users/4").mock(side_effect=write)
    app = client.application
    slow: list[Any] = []
    reader = threading.Thread(
        target=lambda: slow.append(app.test_client().get("/api/users/4", headers=bearer()))
    )
    reader.start()
    assert started.wait(5)
    assert client.patch("/api/users/4", headers=bearer(), json={}).status_code == 204
    release.set()
    reader.join(5)
    assert slow[0].get_json() == {"v": 1}  # its own answer: read before the write
    assert "stored" not in status_of(slow[0])
    after = client.get("/api/users/4", headers=bearer())
    assert after.get_json() == {"v": 2}


def test_a_collapsed_follower_asking_for_a_checked_answer_never_gets_the_old_one(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(CONFIG)
    app = client.application
    route = counting(upstream, "/catalog", json={"v": "old"})
    client.get("/api/catalog")
    release = threading.Event()

    def failing(request: httpx.Request) -> httpx.Response:
        release.wait(5)
        return httpx.Response(503)

    route.mock(side_effect=failing)
    answers: list[Any] = []

    def read() -> None:
        answers.append(app.test_client().get("/api/catalog", headers={"Cache-Control": "no-cache"}))

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while len(app.gateway.cache.flights) == 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)
    time.sleep(0.2)
    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(a.status_code for a in answers) == [503, 503]


def test_a_304_that_forbids_keeping_is_served_with_its_own_fields(
    client: FlaskClient, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(
        [
            httpx.Response(
                200, json={"v": 1}, headers={"ETag": '"a"', "Cache-Control": "max-age=1"}
            ),
            httpx.Response(304, headers={"ETag": '"a"', "Cache-Control": "no-store"}),
        ]
    )
    upstream.get(f"{USERS}/catalog").mock(side_effect=lambda r: next(answers))
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    client.get("/api/catalog")
    monkeypatch.setattr(time, "time", lambda: now + 2)
    answer = client.get("/api/catalog")
    assert answer.get_json() == {"v": 1}
    assert answer.headers["Cache-Control"] == "no-store"
    assert status_of(answer) == "gateway; fwd=stale; fwd-status=304"


def test_a_304_for_another_strong_etag_is_asked_again_without_conditions(
    client: FlaskClient, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(
        [
            httpx.Response(
                200, json={"v": 1}, headers={"ETag": '"a"', "Cache-Control": "max-age=1"}
            ),
            httpx.Response(304, headers={"ETag": '"b"'}),
            httpx.Response(200, json={"v": 2}, headers={"ETag": '"b"'}),
        ]
    )
    route = upstream.get(f"{USERS}/catalog").mock(side_effect=lambda r: next(answers))
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    client.get("/api/catalog")
    monkeypatch.setattr(time, "time", lambda: now + 2)
    answer = client.get("/api/catalog")
    assert answer.get_json() == {"v": 2} and answer.headers["ETag"] == '"b"'
    assert route.call_count == 3
    assert "if-none-match" not in route.calls.last.request.headers
