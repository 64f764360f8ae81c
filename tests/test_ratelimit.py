"""Rate-limit counting and its policies, in-process.

Counters run over memory:// and over the real Redis at 127.0.0.1:6379 (never a fake):
every test counts under a bucket of its own, so nothing is ever flushed. Without that
Redis, its cases fail under CI=true and are skipped elsewhere. The policies are
exercised through create_app(config).test_client() with the upstream mocked by respx.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import limits.storage
import pytest
import respx
from flask.testing import FlaskClient

from gateway.config import ConfigError, load_config_text
from gateway.config.load import parse_rate_limits
from gateway.config.model import RateLimit, RateLimitSettings
from gateway.policies.ratelimit import limit_headers
from gateway.ratelimit import Counters, StorageUnavailable, Verdict
from gateway.ratelimit_storage import make_storage
from tests.app_support import ClientFactory
from tests.integration.redis_support import (
    OwnRedis,
    address,
    ask,
    command_log,
    delete_counters,
    release,
    require_shared_redis,
    start_own_cluster,
    start_own_sentinel,
    wait_until,
)
from tests.tokens import mint_token

STRATEGIES = ["moving-window", "fixed-window", "sliding-window-counter"]
STORAGES = ["memory", "redis"]


def storage_uri(kind: str) -> str:
    return "memory://" if kind == "memory" else require_shared_redis()


def counters_for(kind: str, strategy: str = "moving-window", **settings: Any) -> Counters:
    return Counters(RateLimitSettings(storage=storage_uri(kind), strategy=strategy, **settings))


def limits_of(*texts: str) -> tuple[RateLimit, ...]:
    return parse_rate_limits(list(texts))


@pytest.fixture
def bucket() -> str:
    return "unit-" + uuid.uuid4().hex


def closed_port() -> int:
    """A loopback port nothing listens on (bound a moment ago, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Counters: each strategy, each storage ------------------------------------------------


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hit_allows_exactly_the_limit_and_counts_down(
    kind: str, strategy: str, bucket: str
) -> None:
    counters = counters_for(kind, strategy)
    three = limits_of("3/minute")
    verdicts = [counters.hit(three, bucket, "ip:192.0.2.1") for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0, 0]
    assert all(v.limit == three[0] for v in verdicts)


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_buckets_and_client_keys_count_apart(kind: str, strategy: str, bucket: str) -> None:
    counters = counters_for(kind, strategy)
    one = limits_of("1/minute")
    assert counters.hit(one, bucket, "user:alice").allowed
    assert not counters.hit(one, bucket, "user:alice").allowed
    assert counters.hit(one, bucket, "user:bob").allowed
    assert counters.hit(one, bucket + "-other", "user:alice").allowed


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_test_looks_without_counting(kind: str, strategy: str, bucket: str) -> None:
    counters = counters_for(kind, strategy)
    two = limits_of("2/minute")
    for _ in range(5):
        assert counters.test(two, bucket, "ip:192.0.2.2") is None
    assert [counters.hit(two, bucket, "ip:192.0.2.2").allowed for _ in range(3)] == [
        True,
        True,
        False,
    ]
    before = time.time()
    verdict = counters.test(two, bucket, "ip:192.0.2.2")
    assert verdict is not None and not verdict.allowed
    assert verdict.limit == two[0] and verdict.remaining == 0
    assert before < verdict.reset_at <= before + 60 + 1
    assert 1 <= verdict.retry_after() <= 60
    # Looking again still counts nothing: another key is untouched.
    assert counters.test(two, bucket, "ip:192.0.2.3") is None


@pytest.mark.parametrize("kind", STORAGES)
def test_test_names_the_first_limit_used_up(kind: str, bucket: str) -> None:
    counters = counters_for(kind)
    both = limits_of("5/hour", "2/minute")
    counters.hit(both, bucket, "k")
    counters.hit(both, bucket, "k")
    verdict = counters.test(both, bucket, "k")
    assert verdict is not None and verdict.limit.text == "2/minute"


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_several_limits_at_once(kind: str, strategy: str, bucket: str) -> None:
    counters = counters_for(kind, strategy)
    both = limits_of("2/minute", "5/hour")
    first = counters.hit(both, bucket, "k")
    # The headers follow the limit closest to running out.
    assert first.allowed and first.limit.text == "2/minute" and first.remaining == 1
    assert counters.hit(both, bucket, "k").remaining == 0
    refused = counters.hit(both, bucket, "k")
    assert not refused.allowed and refused.limit.text == "2/minute"

    tight_hour = limits_of("3/minute", "2/hour")
    verdict = counters.hit(tight_hour, bucket + "-h", "k")
    assert verdict.limit.text == "2/hour" and verdict.remaining == 1


def _remaining(counters: Counters, text: str, bucket: str, key: str) -> int:
    item = limits.parse(text)
    return int(counters.limiter.get_window_stats(item, bucket, key).remaining)


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize(
    "order", [("2/minute", "5/hour"), ("5/hour", "2/minute")], ids=["minute-first", "hour-first"]
)
def test_a_refused_request_is_charged_to_no_limit(
    kind: str, order: tuple[str, str], bucket: str
) -> None:
    """Two requests pass, three are refused by 2/minute: 5/hour must show 2 used, not 5,
    whichever order the limits are written in."""
    counters = counters_for(kind)
    both = limits_of(*order)
    verdicts = [counters.hit(both, bucket, "k") for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, False, False, False]
    assert _remaining(counters, "5/hour", bucket, "k") == 3


# --- what the client is told ---------------------------------------------------------------


@pytest.mark.parametrize("kind", STORAGES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_headers_agree_with_the_window(kind: str, strategy: str, bucket: str) -> None:
    counters = counters_for(kind, strategy)
    three = limits_of("3/minute")
    for expected_remaining in (2, 1, 0):
        before = time.time()
        verdict = counters.hit(three, bucket, "k")
        after = time.time()
        headers = limit_headers(verdict)
        assert headers["X-RateLimit-Limit"] == "3"
        assert headers["X-RateLimit-Remaining"] == str(expected_remaining)
        reset = int(headers["X-RateLimit-Reset"])
        assert before < reset + 1 and reset <= after + 60, (strategy, before, verdict)
        assert headers["RateLimit-Policy"] == '"3/minute";q=3;w=60'
        policy, r, t = headers["RateLimit"].split(";")
        assert policy == '"3/minute"' and r == f"r={expected_remaining}"
        assert 1 <= int(t.removeprefix("t=")) <= 60, (strategy, headers)
    refused = counters.hit(three, bucket, "k")
    assert not refused.allowed
    assert 1 <= refused.retry_after() <= 60
    assert limit_headers(refused)["X-RateLimit-Remaining"] == "0"


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    limit = limits_of("1/second")[0]
    assert Verdict(False, limit, 0, time.time() + 0.2).retry_after() == 1
    assert Verdict(False, limit, 0, time.time() - 5).retry_after() == 1
    assert Verdict(False, limit, 0, time.time() + 41.3).retry_after() == 42


# --- storage failures ---------------------------------------------------------------------


def test_a_dead_redis_port_raises_storage_unavailable_at_once(bucket: str) -> None:
    counters = Counters(
        RateLimitSettings(storage=f"redis://127.0.0.1:{closed_port()}/0", storage_timeout_ms=50)
    )
    one = limits_of("1/minute")
    for call in (counters.hit, counters.test):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            call(one, bucket, "k")
        assert time.monotonic() - started < 0.5
    assert counters.storage_errors == 2
    assert counters.reachable() is False


@pytest.mark.parametrize("timeout_ms", [50, 200])
def test_a_redis_that_never_answers_fails_within_the_storage_timeout(
    timeout_ms: int, bucket: str
) -> None:
    # A listening socket nobody accepts from: connections succeed, nothing answers,
    # like a frozen Redis.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        counters = Counters(
            RateLimitSettings(storage=f"redis://127.0.0.1:{port}/0", storage_timeout_ms=timeout_ms)
        )
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            counters.hit(limits_of("1/minute"), bucket, "k")
        elapsed = time.monotonic() - started
        assert timeout_ms / 1000 * 0.8 <= elapsed < timeout_ms / 1000 * 4 + 0.3, elapsed
        started = time.monotonic()
        assert counters.reachable() is False
        assert time.monotonic() - started < timeout_ms / 1000 * 4 + 0.3


def test_redis_storage_uses_the_configured_socket_timeouts() -> None:
    storage = make_storage(
        RateLimitSettings(storage="redis://127.0.0.1:1/0", storage_timeout_ms=75)
    )
    assert isinstance(storage, limits.storage.RedisStorage)
    kwargs = storage.storage.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.075
    assert kwargs["socket_connect_timeout"] == 0.075


def test_memory_storage_is_used_as_it_is() -> None:
    storage = make_storage(RateLimitSettings(storage="memory://"))
    assert isinstance(storage, limits.storage.MemoryStorage)


def test_sentinels_that_never_answer_fail_the_check_within_the_timeout(bucket: str) -> None:
    """Both Sentinels take connections and never answer: the first costs the timeout,
    and the second gets what is left of one more."""
    with socket.socket() as silent, socket.socket() as also_silent:
        ports = []
        for sock in (silent, also_silent):
            sock.bind(("127.0.0.1", 0))
            sock.listen(16)
            ports.append(sock.getsockname()[1])
        hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
        counters = Counters(
            RateLimitSettings(storage=f"redis+sentinel://{hosts}/svc", storage_timeout_ms=200)
        )
        try:
            for call in (counters.hit, counters.test):
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="No master found"):
                    call(limits_of("1/minute"), bucket, "k")
                assert 0.18 <= time.monotonic() - started < 0.5
            started = time.monotonic()
            assert counters.reachable() is False
            assert time.monotonic() - started < 0.5
        finally:
            release(counters)


def test_a_sentinel_that_never_answers_costs_one_timeout_once(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The first Sentinel of the URI takes connections but never answers: after its
    timeout the second names the primary, and is asked first from then on."""
    primary = OwnRedis(tmp_path).start()
    request.addfinalizer(primary.close)
    sentinel = start_own_sentinel(tmp_path, primary, "svc")
    request.addfinalizer(sentinel.close)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        hosts = f"127.0.0.1:{silent.getsockname()[1]},127.0.0.1:{sentinel.port}"
        counters = Counters(
            RateLimitSettings(storage=f"redis+sentinel://{hosts}/svc", storage_timeout_ms=300)
        )
        try:
            two = limits_of("2/minute")
            started = time.monotonic()
            assert counters.hit(two, "b", "k").remaining == 1
            assert 0.27 <= time.monotonic() - started < 0.6
            release(counters)  # the next check connects, and asks for the primary, anew
            started = time.monotonic()
            assert counters.hit(two, "b", "k").remaining == 0
            assert time.monotonic() - started < 0.2
        finally:
            release(counters)


def test_a_cluster_that_is_down_or_gone_fails_the_check_within_the_timeout(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A one-node cluster no longer serves every slot (CLUSTERDOWN), stops answering,
    then dies and comes back empty. Each failed check ends within twice the timeout
    (a timeout, then the topology refresh it asked for), and counting resumes by
    itself each time."""
    node = start_own_cluster(tmp_path)
    request.addfinalizer(node.close)
    counters = Counters(
        RateLimitSettings(storage=f"redis+cluster://127.0.0.1:{node.port}", storage_timeout_ms=200)
    )
    request.addfinalizer(lambda: release(counters))

    def fails_quickly() -> None:
        for call in (counters.hit, counters.test, counters.hit):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                call(five, "b", "k")
            assert time.monotonic() - started < 0.5

    five = limits_of("5/minute")
    assert counters.hit(five, "b", "k").remaining == 4
    ask(node.port, "CLUSTER", "DELSLOTSRANGE", 0, 99)
    wait_until(lambda: b"cluster_state:fail" in ask(node.port, "CLUSTER", "INFO"), 5, "down")
    fails_quickly()
    ask(node.port, "CLUSTER", "ADDSLOTSRANGE", 0, 99)
    wait_until(lambda: b"cluster_state:ok" in ask(node.port, "CLUSTER", "INFO"), 5, "up")
    assert counters.hit(five, "b", "k").remaining == 3

    node.freeze()
    fails_quickly()
    node.thaw()
    # Once thawed, the node runs what was sent to it meanwhile, counted or not.
    assert counters.hit(five, "b", "thawed").remaining == 4

    node.kill()
    fails_quickly()
    assert counters.reachable() is False
    node.start()  # the same port and nodes file: the same slots, no counters
    wait_until(lambda: b"cluster_state:ok" in ask(node.port, "CLUSTER", "INFO"), 5, "back")
    assert counters.hit(five, "b", "k").remaining == 4


# --- through the app -----------------------------------------------------------------------

UPSTREAM = "http://backend.internal"
SECRET = "0123456789abcdef0123456789abcdef-ratelimit"
ISSUER = "http://issuer.example"
SERVICE_KEY = "service-key-for-the-limits"
ORIGIN = "http://app.example.test"


def config_text(storage: str, *, auth_failures: str = "[3/minute]", extra: str = "") -> str:
    """`extra` lines go into rate_limits."""
    digest = hashlib.sha256(SERVICE_KEY.encode()).hexdigest()
    return f"""\
version: 1
gateway:
  trusted_proxies: 0
cors:
  allow_origins: [{ORIGIN}]
  allow_credentials: true
  expose_headers: [Retry-After, X-RateLimit-Remaining]
auth:
  jwt:
    issuer: {ISSUER}
    audience: gateway
    algorithms: [HS256]
    secret: "{SECRET}"
  api_keys:
    header: X-API-Key
    keys:
      - {{id: reporting, sha256: {digest}, roles: [service]}}
rate_limits:
  storage: "{storage}"
  default: []
  auth_failures: {auth_failures}
  storage_timeout_ms: 50
{extra}upstreams:
  backend:
    url: {UPSTREAM}
    retries: 0
routes:
  - name: secure
    path: /secure
    methods: [GET]
    upstream: backend
    auth: [jwt, api_key]
  - name: open
    path: /open
    methods: [GET]
    upstream: backend
    auth: public
    rate_limit: [2/minute]
  - name: members
    path: /members
    methods: [GET]
    upstream: backend
    auth: [jwt]
    roles: [member]
    rate_limit: [1/minute]
"""


@pytest.fixture
def upstream_base_url() -> str:
    return UPSTREAM


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route().mock(return_value=httpx.Response(200, json={"ok": True}))
    return upstream


@pytest.fixture(params=STORAGES)
def guarded(request: pytest.FixtureRequest, gateway_client: ClientFactory) -> FlaskClient:
    return gateway_client(config_text(storage_uri(request.param)))


def valid_token(subject: str = "", roles: tuple[str, ...] = ()) -> str:
    return mint_token(
        SECRET, issuer=ISSUER, audience="gateway", subject=subject or None, roles=roles, lifetime=60
    )


def forged_token() -> str:
    return mint_token(
        "another-secret-of-at-least-32-bytes!!",
        issuer=ISSUER,
        audience="gateway",
        subject="admin",
        lifetime=60,
    )


def get(client: FlaskClient, path: str, ip: str, **headers: str) -> Any:
    return client.get(path, headers=headers, environ_base={"REMOTE_ADDR": ip})


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = json.loads(response.get_data())
    assert body["status"] == status and body["code"] == code, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def test_guard_blocks_an_address_after_three_refused_tokens(
    guarded: FlaskClient, upstream: respx.MockRouter
) -> None:
    ip = address()
    for _ in range(3):
        problem(
            get(guarded, "/secure", ip, Authorization=f"Bearer {forged_token()}"),
            401,
            "unauthorized",
        )
    calls = upstream.calls.call_count
    blocked = get(guarded, "/secure", ip, Authorization=f"Bearer {valid_token()}")
    problem(blocked, 429, "rate_limited")
    assert blocked.headers["Retry-After"].isdigit()
    assert 1 <= int(blocked.headers["Retry-After"]) <= 60
    assert "WWW-Authenticate" not in blocked.headers
    assert upstream.calls.call_count == calls  # never forwarded
    # Another address is unaffected.
    assert (
        get(guarded, "/secure", address(), Authorization=f"Bearer {valid_token()}").status_code
        == 200
    )


def test_guard_counts_refused_api_keys_but_not_missing_credentials(
    guarded: FlaskClient, upstream: respx.MockRouter
) -> None:
    quiet = address()
    for _ in range(5):
        problem(get(guarded, "/secure", quiet), 401, "unauthorized")
    assert get(guarded, "/secure", quiet, **{"X-API-Key": SERVICE_KEY}).status_code == 200

    noisy = address()
    for _ in range(3):
        problem(get(guarded, "/secure", noisy, **{"X-API-Key": "guess"}), 401, "unauthorized")
    problem(get(guarded, "/secure", noisy, **{"X-API-Key": SERVICE_KEY}), 429, "rate_limited")
    # Public routes do not look at credentials, so the guard does not apply there.
    assert get(guarded, "/open", noisy).status_code == 200


def test_guard_spares_a_token_this_worker_already_verified(
    guarded: FlaskClient, upstream: respx.MockRouter
) -> None:
    """A token in the verified-token cache carries a valid signature, so it cannot be
    a guess; everything else from a blocked address is still refused before its
    credentials are looked at."""
    ip = address()
    known = f"Bearer {valid_token()}"
    assert get(guarded, "/secure", ip, Authorization=known).status_code == 200
    for _ in range(3):
        problem(
            get(guarded, "/secure", ip, Authorization=f"Bearer {forged_token()}"),
            401,
            "unauthorized",
        )
    assert get(guarded, "/secure", ip, Authorization=known).status_code == 200
    calls = upstream.calls.call_count
    for headers in (
        {"Authorization": f"Bearer {valid_token()}"},
        {"X-API-Key": SERVICE_KEY},
        {"Authorization": f"Bearer {forged_token()}"},
        {"Authorization": "Bearer "},
        {},
    ):
        blocked = get(guarded, "/secure", ip, **headers)
        problem(blocked, 429, "rate_limited")
        assert "WWW-Authenticate" not in blocked.headers
    assert upstream.calls.call_count == calls


def test_a_request_costs_one_storage_call_and_the_guard_one_more_unless_spared(
    gateway_client: ClientFactory, upstream: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Redis: the route's limits, however many, are one call; the guard's check is
    one more, skipped for a token this worker already verified."""
    name = "counted-" + uuid.uuid4().hex
    url = require_shared_redis()
    text = config_text(url) + (
        f"  - name: {name}\n"
        f"    path: /{name}\n"
        "    methods: [GET]\n"
        "    upstream: backend\n"
        "    auth: [jwt, api_key]\n"
        "    rate_limit: [3/minute, 100/hour]\n"
    )
    client = gateway_client(text)
    gateway = client.application.gateway  # type: ignore[attr-defined]
    sent = command_log(gateway.counters, monkeypatch)
    ip = address()
    token = f"Bearer {valid_token()}"

    assert get(client, "/open", ip).status_code == 200
    assert sent.take() == ["EVALSHA"]  # a public route: the limit alone
    assert get(client, f"/{name}", ip, Authorization=token).status_code == 200
    assert sent.take() == ["EVALSHA", "EVALSHA"]  # a new token: the guard, the limits
    assert get(client, f"/{name}", ip, Authorization=token).status_code == 200
    assert sent.take() == ["EVALSHA"]  # verified before: the limits alone
    assert get(client, f"/{name}", ip, **{"X-API-Key": SERVICE_KEY}).status_code == 200
    assert sent.take() == ["EVALSHA", "EVALSHA"]  # an API key always meets the guard
    problem(get(client, f"/{name}", ip), 401, "unauthorized")
    assert sent.take() == ["EVALSHA"]  # the guard; nothing sent is nothing counted
    problem(get(client, f"/{name}", ip, Authorization="Bearer x.y.z"), 401, "unauthorized")
    assert sent.take() == ["EVALSHA", "EVALSHA"]  # the guard, then the failure counted
    assert get(client, f"/{name}", ip, Authorization=token).status_code == 200
    assert sent.take() == ["EVALSHA"]
    refused = get(client, f"/{name}", ip, Authorization=token)
    problem(refused, 429, "rate_limited")  # the fourth of 3/minute for user:<sub>
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert sent.take() == ["EVALSHA"]
    delete_counters(url, name)


def test_guard_is_off_with_an_empty_auth_failures_list(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(config_text("memory://", auth_failures="[]"))
    ip = address()
    for _ in range(12):
        problem(get(client, "/secure", ip, Authorization="Bearer nope"), 401, "unauthorized")
    assert get(client, "/secure", ip, Authorization=f"Bearer {valid_token()}").status_code == 200


def test_guard_defaults_to_ten_a_minute() -> None:
    text = config_text("memory://").replace("  auth_failures: [3/minute]\n", "")
    config = load_config_text(text, "routes.yaml", {})
    assert config.rate_limits.auth_failures == (RateLimit("10/minute", 10, 60),)
    assert config.rate_limits.storage_timeout_ms == 50


def test_a_refused_request_is_a_429_problem_with_budget_and_cors(
    guarded: FlaskClient, upstream: respx.MockRouter
) -> None:
    ip = address()
    ok = get(guarded, "/open", ip, Origin=ORIGIN)
    assert ok.status_code == 200
    assert ok.headers["X-RateLimit-Limit"] == "2" and ok.headers["X-RateLimit-Remaining"] == "1"
    assert get(guarded, "/open", ip).headers["X-RateLimit-Remaining"] == "0"
    refused = get(guarded, "/open", ip, Origin=ORIGIN)
    body = problem(refused, 429, "rate_limited")
    assert body["instance"] == "/open" and "2/minute" in body["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Origin" in refused.headers.get("Vary", "")
    assert upstream.calls.call_count == 2


def test_401_and_403_come_before_the_limit_and_use_none_of_it(
    guarded: FlaskClient, upstream: respx.MockRouter
) -> None:
    subject = "member-" + uuid.uuid4().hex
    member = f"Bearer {valid_token(subject, ('member',))}"
    guest = f"Bearer {valid_token(subject, ('guest',))}"
    ip = address()
    for _ in range(3):
        problem(get(guarded, "/members", ip, Authorization=guest), 403, "forbidden")
    assert get(guarded, "/members", ip, Authorization=member).status_code == 200
    problem(get(guarded, "/members", ip, Authorization=member), 429, "rate_limited")
    # Once over the limit, a caller without the role still learns 403, a stranger 401.
    problem(get(guarded, "/members", ip, Authorization=guest), 403, "forbidden")
    problem(get(guarded, "/members", address()), 401, "unauthorized")
    assert upstream.calls.call_count == 1


@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_storage_down_lets_traffic_pass_or_answers_503(
    gateway_client: ClientFactory, mode: str, upstream: respx.MockRouter
) -> None:
    text = config_text(
        f"redis://127.0.0.1:{closed_port()}/0", extra=f"  on_storage_error: {mode}\n"
    )
    client = gateway_client(text)
    ip = address()
    replies = [get(client, "/open", ip) for _ in range(4)]
    secure = get(client, "/secure", ip, **{"X-API-Key": SERVICE_KEY})
    ready = client.get("/readyz")
    if mode == "allow":
        assert [r.status_code for r in replies] == [200] * 4
        assert all("X-RateLimit-Remaining" not in r.headers for r in replies)
        assert secure.status_code == 200
        assert ready.status_code == 200
        assert ready.get_json()["checks"]["rate_limit_storage"].startswith("unreachable")
    else:
        for reply in [*replies, secure]:
            problem(reply, 503, "service_unavailable")
            assert reply.headers["Retry-After"].isdigit()
        assert ready.status_code == 503
        assert ready.get_json()["status"] == "not_ready"
    assert upstream.calls.call_count == (5 if mode == "allow" else 0)


# --- configuration ---------------------------------------------------------------------


def config_problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "routes.yaml", {})
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("setting", "word"),
    [
        ("strategy: token-bucket", "strategy"),
        ("on_storage_error: ignore", "on_storage_error"),
        ("storage_timeout_ms: 0", "storage_timeout_ms"),
        ("auth_failures: [often]", "often"),
    ],
)
def test_bad_rate_limit_settings_are_config_errors(setting: str, word: str) -> None:
    text = config_text("memory://").replace("  default: []\n", f"  default: []\n  {setting}\n")
    found = config_problems(text)
    assert any(word in p for p in found), found


def test_rate_limit_bucket_must_be_a_plain_name() -> None:
    text = config_text("memory://") + "    rate_limit_bucket: 'a bucket/with spaces'\n"
    found = config_problems(text)
    assert any("rate_limit_bucket" in p for p in found), found


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_loads(strategy: str) -> None:
    text = config_text("memory://").replace(
        "  default: []\n", f"  default: []\n  strategy: {strategy}\n"
    )
    config = load_config_text(text, "routes.yaml", {})
    assert config.rate_limits.strategy == strategy
    assert Counters(config.rate_limits).limiter is not None


def test_a_request_asks_a_storage_that_just_failed_it_no_more(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    """The guard's check fails on a dead Redis; the route's limit and the failure count
    then skip the storage, so one request pays its timeout once, not three times."""
    text = config_text(f"redis://127.0.0.1:{closed_port()}/0", extra="  on_storage_error: allow\n")
    client = gateway_client(text)
    counters = client.application.gateway.counters  # type: ignore[attr-defined]
    calls: list[str] = []
    for name in ("test", "hit"):
        original = getattr(counters, name)

        def counted(
            *args: object,
            _name: str = name,
            _original: object = original,
            _calls: list[str] = calls,
        ) -> object:
            _calls.append(_name)
            return _original(*args)  # type: ignore[operator]

        setattr(counters, name, counted)
    ip = address()
    assert get(client, "/secure", ip, **{"X-API-Key": SERVICE_KEY}).status_code == 200
    assert calls == ["test"]
    calls.clear()
    problem(get(client, "/secure", ip, **{"X-API-Key": "wrong"}), 401, "unauthorized")
    assert calls == ["test"]
