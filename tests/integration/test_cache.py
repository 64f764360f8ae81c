"""The response cache across real processes: gunicorn gateways, real HTTP, real JWTs,
the real Redis, and the reference stack.

The gateways here serve cache_support.cache_config's routes in front of a scripted
upstream that records every request, so each test counts exactly how often the
gateway asked it. Every test's paths carry a token of their own (cache keys, and on
Redis the stored keys, are per path). One gateway per storage runs for the module:

- memory://, one worker: hits, freshness, variants, scopes, stampedes, invalidation,
  conditional requests;
- memory://, two workers: a write through one worker drops the other's copies;
- memory:// with the smallest budget (max_bytes 1024): answers too big to keep;
- the shared Redis, two workers: one copy for both, dropped by a write through either;
- a Redis URL on a closed port, with on_storage_error allow and deny.

The reference stack (routes.yaml: users.get keeps each caller's copy for 10 s) is
checked last: hits, per-caller copies, a PATCH seen through every worker, and 412.

Requests that must reach a given worker go on kept-alive connections pinned to it
(cache_support.pin_workers); the others go on fresh connections (support.http_request).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import yaml

from .cache_support import (
    CACHE_STATUS,
    COLLAPSED,
    HIT_STATUS,
    STORED,
    Answer,
    Pinned,
    ScriptedUpstream,
    bearer,
    cache_gateway,
    echo,
    hit_ttl,
    json_answer,
    pin_workers,
    token,
)
from .jwt_support import forged_token
from .redis_support import SHARED_REDIS_URL, require_shared_redis
from .stack_support import (
    ROUTES,
    Login,
    ReferenceStack,
    StackClient,
    assert_gateway_problem,
    leaked_addresses,
    stack_fixtures,
    unique_email,
)
from .support import LOOPBACK, Gateway, Reply, assert_problem, http_request, pid_alive
from .upstream import Received

pytestmark = pytest.mark.integration

reference_stack, api = stack_fixtures()

QUICK = 1.0  # seconds: an answer while the cache's storage is down is never slower
STALE_AFTER = 1.05  # seconds: past a freshness of 1 s (entries keep wall-clock times)
STORAGE_ERROR = "gateway; fwd=miss; detail=storage-error"
TINY_BUDGET = 1024  # cache.max_bytes: the schema's minimum
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WRITE_CYCLES = 250  # writes through one worker, each followed by a read through the other


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def memory_gateway(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[Gateway]:
    """memory://, ONE worker: every request meets the same store and flights."""
    with cache_gateway(
        tmp_path_factory.mktemp("cache-memory"), scripted, workers=1, storage="memory://"
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def memory_pair(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[Gateway]:
    """memory://, two workers: each keeps its own copies."""
    with cache_gateway(
        tmp_path_factory.mktemp("cache-memory-pair"), scripted, workers=2, storage="memory://"
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def redis_gateway(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[Gateway]:
    """The shared Redis, two workers. A generous storage timeout: a loaded test machine
    must not turn into storage errors here (those have tests of their own)."""
    url = require_shared_redis()
    with cache_gateway(
        tmp_path_factory.mktemp("cache-redis"),
        scripted,
        workers=2,
        storage=url,
        storage_timeout_ms=1000,
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def tiny_gateway(
    tmp_path_factory: pytest.TempPathFactory, scripted: ScriptedUpstream
) -> Iterator[Gateway]:
    """memory:// with the smallest budget the schema allows, one worker."""
    with cache_gateway(
        tmp_path_factory.mktemp("cache-tiny"),
        scripted,
        workers=1,
        storage="memory://",
        max_bytes=TINY_BUDGET,
        max_entry_bytes=TINY_BUDGET - 1,  # the largest the budget allows
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=["allow", "deny"])
def down_gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scripted: ScriptedUpstream,
    closed_port: int,
) -> Iterator[Gateway]:
    """Cache storage on a loopback port nothing listens on, two workers."""
    with cache_gateway(
        tmp_path_factory.mktemp(f"cache-down-{request.param}"),
        scripted,
        workers=2,
        storage=f"redis://{LOOPBACK}:{closed_port}/0",
        on_storage_error=request.param,
    ) as gateway:
        yield gateway


# -- helpers -----------------------------------------------------------------------------------


def get(gateway: Gateway, target: str, *headers: tuple[str, str]) -> Reply:
    reply = gateway.get(target, list(headers))
    assert reply.status != 500, reply.describe()
    return reply


def status(reply: Reply) -> str | None:
    return reply.header(CACHE_STATUS)


def stored(reply: Reply) -> Reply:
    """A miss the upstream answered 200 and the cache kept."""
    assert reply.status == 200, reply.describe()
    assert status(reply) == STORED, reply.describe()
    return reply


def hit(reply: Reply, of: Reply | None = None) -> Reply:
    """A hit: the kept answer, byte for byte the same as `of` when given."""
    assert reply.status == 200, reply.describe()
    hit_ttl(reply)
    assert reply.header("Age") is not None, reply.describe()
    if of is not None:
        assert reply.body == of.body, (reply.describe(), of.describe())
        for name in ("Content-Type", "Content-Length", "ETag", "Cache-Control", "Vary"):
            assert reply.header_values(name) == of.header_values(name), (name, reply.describe())
        assert reply.header("X-Request-ID") != of.header("X-Request-ID")
    return reply


def concurrently(count: int, send: Any) -> list[Reply]:
    """`send(i)` on `count` threads released together; every reply, in order."""
    replies: list[Reply | None] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def one(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            replies[index] = send(index)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not errors, errors
    assert all(r is not None for r in replies), "a concurrent request got no answer"
    return [r for r in replies if r is not None]


def conditional(etag: str, *headers: tuple[str, str]) -> Any:
    """An upstream resource with `etag`: 304 to a matching If-None-Match, else the echo."""
    whole = echo(("ETag", etag), *headers)

    def answer(received: Received, n: int) -> Answer:
        if received.header("If-None-Match") == etag:
            return Answer(304, (("ETag", etag), *headers))
        return whole(received, n)

    return answer


def sized(received: Received, n: int) -> Answer:
    """A text body as long as the last segment of the path says."""
    size = int(received.path.rsplit("/", 1)[1])
    return Answer(200, (("Content-Type", "text/plain"),), b"s" * size)


# -- hits and misses ---------------------------------------------------------------------------


def test_a_second_get_is_served_from_the_cache(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    path = f"/pub/{tok}/item"
    first = stored(get(memory_gateway, path))
    assert first.header("Age") == "0", first.describe()
    assert first.json()["n"] == 1 and first.json()["target"] == path

    second = hit(get(memory_gateway, path), of=first)
    assert 28 <= hit_ttl(second) <= 30, second.describe()
    assert second.header("Age") in ("0", "1"), second.describe()
    assert second.header("Content-Length") == str(len(first.body))
    assert scripted.count(tok) == 1

    # HEAD is answered from the kept GET: its framing, no body, no upstream call.
    head = memory_gateway.request("HEAD", path)
    assert head.status == 200 and head.body == b"", head.describe()
    assert head.header("Content-Length") == str(len(first.body)), head.describe()
    hit_ttl(head)
    assert scripted.count(tok) == 1 and scripted.count(tok, "HEAD") == 0

    # Another path, or another query string, is another copy.
    other = stored(get(memory_gateway, f"{path}?page=2"))
    assert other.json()["target"] == f"{path}?page=2"
    assert scripted.count(tok) == 2
    # An uncached route is asked every time and says nothing of a cache.
    for _ in range(2):
        plain = get(memory_gateway, f"/plain/{tok}")
        assert plain.status == 200 and status(plain) is None, plain.describe()
    assert scripted.count(tok) == 4


def test_the_caches_own_answers_keep_a_kept_alive_connection_in_step(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    """Answers made from a kept copy (a HEAD, a 304, a hit) are framed exactly: the
    next answer on the same connection starts where each one ends."""
    tok = token()
    scripted.script(tok, echo(("ETag", '"v1"')))
    path = f"/pub/{tok}"
    with pin_workers(memory_gateway.server) as (connection,):
        first = stored(connection.request("GET", path))
        head = connection.request("HEAD", path)
        assert head.status == 200 and head.body == b"", head.describe()
        assert head.header("Content-Length") == str(len(first.body)), head.describe()
        same = connection.request("GET", path, [("If-None-Match", '"v1"')])
        assert same.status == 304 and same.body == b"", same.describe()
        hit(connection.request("GET", path), of=first)
        hit(connection.request("GET", path), of=first)
    assert scripted.count(tok) == 1 and scripted.count(tok, "HEAD") == 0


def test_the_routes_ttl_expires(memory_gateway: Gateway, scripted: ScriptedUpstream) -> None:
    tok = token()
    path = f"/short/{tok}"  # ttl: 1
    first = stored(get(memory_gateway, path))
    kept_at = time.monotonic()
    assert hit_ttl(hit(get(memory_gateway, path), of=first)) <= 1
    assert scripted.count(tok) == 1

    time.sleep(max(0.0, kept_at + STALE_AFTER - time.monotonic()))
    again = stored(get(memory_gateway, path))
    assert again.json()["n"] == 2, again.describe()
    assert scripted.count(tok) == 2


def test_upstream_max_age_shortens_the_routes_ttl(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(("Cache-Control", "max-age=1")))
    path = f"/pub/{tok}"  # ttl: 30
    first = stored(get(memory_gateway, path))
    kept_at = time.monotonic()
    second = hit(get(memory_gateway, path), of=first)
    assert hit_ttl(second) <= 1, second.describe()
    assert second.header("Cache-Control") == "max-age=1"

    time.sleep(max(0.0, kept_at + STALE_AFTER - time.monotonic()))
    third = stored(get(memory_gateway, path))  # nothing to revalidate with: fetched again
    assert third.json()["n"] == 2
    assert scripted.count(tok) == 2


def test_the_upstreams_age_counts_against_freshness(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(("Cache-Control", "max-age=60"), ("Age", "10")))
    path = f"/pub/{tok}"  # ttl 30 wins over max-age=60, less the 10 s it had already aged
    first = stored(get(memory_gateway, path))
    assert first.header_values("Age") == ["10"], first.describe()
    second = hit(get(memory_gateway, path), of=first)
    assert second.header_values("Age") in (["10"], ["11"]), second.describe()
    assert 18 <= hit_ttl(second) <= 20, second.describe()
    assert scripted.count(tok) == 1


@pytest.mark.parametrize("prefix", ["pub", "me", "team"])
def test_no_store_is_never_kept(
    memory_gateway: Gateway, scripted: ScriptedUpstream, prefix: str
) -> None:
    tok = token()
    scripted.script(tok, echo(("Cache-Control", "no-store")))
    caller = bearer("nostore", tenant="t-nostore")
    for n in (1, 2):
        reply = get(memory_gateway, f"/{prefix}/{tok}", caller)
        assert reply.status == 200 and reply.json()["n"] == n, reply.describe()
        assert status(reply) == "gateway; fwd=uri-miss; fwd-status=200; detail=no-store"
        assert reply.header("Cache-Control") == "no-store"
    assert scripted.count(tok) == 2


def test_private_is_kept_only_for_one_identity(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(("Cache-Control", "private, max-age=60")))
    caller = bearer("private-reader", tenant="t-private")
    # Shared scopes (every caller, a tenant) never keep a private answer.
    for prefix in ("pub", "team"):
        for _ in range(2):
            reply = get(memory_gateway, f"/{prefix}/{tok}", caller)
            assert reply.status == 200, reply.describe()
            assert status(reply) == "gateway; fwd=uri-miss; fwd-status=200; detail=private"
    assert scripted.count(tok) == 4
    # scope identity is a private cache of one caller: kept.
    first = stored(get(memory_gateway, f"/me/{tok}", caller))
    hit(get(memory_gateway, f"/me/{tok}", caller), of=first)
    assert scripted.count(tok) == 5


# -- variants and scopes -----------------------------------------------------------------------


def test_the_upstreams_vary_keeps_variants_apart(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(("Vary", "Accept-Language")))
    path = f"/pub/{tok}"
    english = stored(get(memory_gateway, path, ("Accept-Language", "en")))
    french = stored(get(memory_gateway, path, ("Accept-Language", "fr")))
    assert (english.json()["lang"], french.json()["lang"]) == ("en", "fr")
    for lang, kept in (("en", english), ("fr", french), ("en", english)):
        reply = hit(get(memory_gateway, path, ("Accept-Language", lang)), of=kept)
        assert reply.json()["lang"] == lang
        vary = [n.strip() for v in reply.header_values("Vary") for n in v.split(",")]
        assert "Accept-Language" in vary, reply.describe()  # with CORS's Origin
    # Without the field: a variant of its own, not either language.
    bare = stored(get(memory_gateway, path))
    assert bare.json()["lang"] is None
    assert scripted.count(tok) == 3


def test_the_routes_vary_keeps_copies_apart(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    path = f"/versioned/{tok}"  # vary: [Accept-Version]; the upstream sends no Vary
    one = stored(get(memory_gateway, path, ("Accept-Version", "1")))
    two = stored(get(memory_gateway, path, ("Accept-Version", "2")))
    assert (one.json()["version"], two.json()["version"]) == ("1", "2")
    hit(get(memory_gateway, path, ("Accept-Version", "1")), of=one)
    hit(get(memory_gateway, path, ("Accept-Version", "2")), of=two)
    assert scripted.count(tok) == 2


def test_identity_scope_keeps_callers_apart(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    path = f"/me/{tok}"
    alice, bob = bearer(f"alice-{tok}"), bearer(f"bob-{tok}")
    first_alice = stored(get(memory_gateway, path, alice))
    first_bob = stored(get(memory_gateway, path, bob))
    assert first_alice.json()["user"] == f"alice-{tok}"
    assert first_bob.json()["user"] == f"bob-{tok}"
    for _ in range(2):
        assert (
            hit(get(memory_gateway, path, alice), of=first_alice).json()["user"] == f"alice-{tok}"
        )
        assert hit(get(memory_gateway, path, bob), of=first_bob).json()["user"] == f"bob-{tok}"
    users = [r.header("X-User-Id") for r in scripted.received(tok)]
    assert users == [f"alice-{tok}", f"bob-{tok}"]

    # The same subject with other roles is told apart too: the upstream hears the roles.
    admin = stored(get(memory_gateway, path, bearer(f"alice-{tok}", roles=["admin"])))
    assert admin.json()["user"] == f"alice-{tok}"
    assert scripted.count(tok) == 3

    # No token, or a forged one: refused before the cache, which gives nothing away.
    for headers in ([], [("Authorization", f"Bearer {forged_token()}")]):
        refused = memory_gateway.get(path, headers)
        assert_problem(refused, 401, None, path)
        assert status(refused) is None and b"alice" not in refused.body, refused.describe()
    assert scripted.count(tok) == 3


def test_tenant_scope_shares_within_a_tenant_only(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    path = f"/team/{tok}"
    first = stored(get(memory_gateway, path, bearer("ann", tenant=f"t1-{tok}")))
    assert (first.json()["user"], first.json()["tenant"]) == ("ann", f"t1-{tok}")
    # Another caller of the tenant gets the tenant's copy: what the upstream said to ann.
    shared = hit(get(memory_gateway, path, bearer("ben", tenant=f"t1-{tok}")), of=first)
    assert shared.json()["user"] == "ann"
    other = stored(get(memory_gateway, path, bearer("cat", tenant=f"t2-{tok}")))
    assert (other.json()["user"], other.json()["tenant"]) == ("cat", f"t2-{tok}")
    assert scripted.count(tok) == 2
    # A caller without a tenant would share with every other such caller: never kept.
    for n in (3, 4):
        lone = get(memory_gateway, path, bearer("dan"))
        assert lone.status == 200 and lone.json()["n"] == n, lone.describe()
        assert status(lone) == "gateway; fwd=bypass; detail=no-tenant", lone.describe()
    assert scripted.count(tok) == 4


# -- stampedes ---------------------------------------------------------------------------------


def test_concurrent_misses_make_one_upstream_call(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(delay=0.8))
    path = f"/pub/{tok}"
    replies = concurrently(8, lambda i: http_request(memory_gateway.port, "GET", path))
    assert scripted.count(tok) == 1
    assert [r.status for r in replies] == [200] * 8, [r.describe() for r in replies]
    assert {r.body for r in replies} == {replies[0].body}
    assert replies[0].json()["n"] == 1
    statuses = sorted(status(r) or "" for r in replies)
    assert statuses == sorted([STORED] + [COLLAPSED] * 7), statuses
    # Each answer is the request's own: its own request id.
    assert len({r.header("X-Request-ID") for r in replies}) == 8
    hit(get(memory_gateway, path), of=replies[0])
    assert scripted.count(tok) == 1


def test_concurrent_misses_of_two_callers_stay_apart(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(delay=0.8))
    path = f"/me/{tok}"
    callers = [bearer(f"alice-{tok}"), bearer(f"bob-{tok}")]
    replies = concurrently(
        6, lambda i: http_request(memory_gateway.port, "GET", path, [callers[i % 2]])
    )
    assert scripted.count(tok) == 2
    for index, reply in enumerate(replies):
        assert reply.status == 200, reply.describe()
        assert reply.json()["user"] == ("alice" if index % 2 == 0 else "bob") + f"-{tok}"
    assert sorted(status(r) or "" for r in replies) == sorted([STORED] * 2 + [COLLAPSED] * 4)


# -- invalidation ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_an_unsafe_method_drops_the_paths_answers(
    memory_gateway: Gateway, scripted: ScriptedUpstream, method: str
) -> None:
    tok = token()
    path, elsewhere = f"/me/{tok}/item", f"/me/{tok}/other"
    alice, bob = bearer(f"alice-{tok}"), bearer(f"bob-{tok}")
    for target, caller in ((path, alice), (path, bob), (f"{path}?page=2", alice)):
        stored(get(memory_gateway, target, caller))
        hit(get(memory_gateway, target, caller))
    stored(get(memory_gateway, elsewhere, alice))
    assert scripted.count(tok) == 4

    write = memory_gateway.request(method, path, [alice], b'{"name": "new"}')
    assert write.status == 200, write.describe()
    assert status(write) is None, write.describe()
    assert scripted.count(tok, method) == 1

    # Every kept answer of the path went, whoever's and whatever the query; another
    # path keeps its own.
    for target, caller in ((path, bob), (path, alice), (f"{path}?page=2", alice)):
        again = stored(get(memory_gateway, target, caller))
        assert again.json()["n"] > 1, again.describe()
    hit(get(memory_gateway, elsewhere, alice))
    assert scripted.count(tok) == 7


def test_a_failed_write_keeps_the_answers(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    reads = echo(("ETag", '"v2"'))

    def answer(received: Received, n: int) -> Answer:
        if received.method == "PATCH":
            return json_answer(
                {
                    "type": "about:blank",
                    "title": "Precondition Failed",
                    "status": 412,
                    "detail": "If-Match does not match the current ETag.",
                    "code": "precondition_failed",
                },
                ("Content-Type", "application/problem+json"),
                status=412,
            )
        return reads(received, n)

    scripted.script(tok, answer)
    path = f"/me/{tok}"
    alice = bearer(f"alice-{tok}")
    first = stored(get(memory_gateway, path, alice))
    refused = memory_gateway.request(
        "PATCH", path, [alice, ("If-Match", '"v1"'), ("Content-Type", "application/json")], b"{}"
    )
    assert_problem(refused, 412, "precondition_failed", path)
    assert scripted.received(tok, "PATCH")[0].header("If-Match") == '"v1"'
    hit(get(memory_gateway, path, alice), of=first)
    assert scripted.count(tok) == 1


def test_a_write_to_another_spelling_of_the_path_drops_its_answers(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    plain, escaped = f"/pub/{tok}/item", f"/pub/{tok}/%69tem"  # %69 is "i"
    first = stored(get(memory_gateway, plain))
    hit(get(memory_gateway, escaped), of=first)  # one resource, one copy
    write = memory_gateway.request("DELETE", escaped)
    assert write.status == 200, write.describe()
    assert scripted.received(tok, "DELETE")[0].path == plain
    assert stored(get(memory_gateway, plain)).json()["n"] == 2
    assert scripted.count(tok) == 2


def test_a_write_through_one_worker_drops_the_copies_of_every_worker(
    memory_pair: Gateway, scripted: ScriptedUpstream
) -> None:
    """memory:// keeps a copy per worker. A write through either worker drops the
    path's copies in both before it is answered, so a read the next moment through the
    other worker is never the copy from before the write. The sibling is told by a
    datagram (gateway/cache/peers.py): the write is repeated, through both workers and
    with every unsafe method, so that a sibling dropping its copy late shows up."""
    tok = token()
    path = f"/pub/{tok}"
    with pin_workers(memory_pair.server) as (first, second):
        assert first.pid != second.pid
        stored(first.request("GET", path))
        stored(second.request("GET", path))  # its own copy: asked again
        hit(first.request("GET", path))
        hit(second.request("GET", path))
        assert scripted.count(tok) == 2

        old_copies = []
        for cycle in range(WRITE_CYCLES):
            writer, reader = (first, second) if cycle % 2 == 0 else (second, first)
            method = WRITE_METHODS[cycle % len(WRITE_METHODS)]
            target = f"{path}/{cycle}"
            stored(writer.request("GET", target))
            stored(reader.request("GET", target))
            write = writer.request(method, target, body=b"{}")
            assert write.status == 200 and status(write) is None, write.describe()
            after = reader.request("GET", target)
            assert after.status == 200, after.describe()
            if status(after) != STORED:
                old_copies.append((cycle, method, status(after), after.json()["n"]))
                continue
            assert after.json()["n"] == 3, after.describe()
            assert stored(writer.request("GET", target)).json()["n"] == 4  # its own went too
        assert not old_copies, (
            f"{len(old_copies)} of {WRITE_CYCLES} reads through the other worker right after "
            f"a write got the copy from before it (cycle, method, Cache-Status, n): "
            f"{old_copies[:5]}"
        )


def redis_keys(path: str) -> list[bytes]:
    """The cache's keys of `path` on the shared Redis (they share the path's hash tag)."""
    tag = hashlib.sha256(path.encode()).hexdigest()[:16]
    client = redis.Redis.from_url(SHARED_REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        return sorted(client.scan_iter(match=f"gateway:cache:{{{tag}}}:*", count=1000))
    finally:
        client.close()


@pytest.mark.parametrize("method", ["POST", "PATCH", "DELETE"])
def test_on_redis_both_workers_share_one_copy_and_a_write_drops_it(
    redis_gateway: Gateway, scripted: ScriptedUpstream, method: str
) -> None:
    tok = token()
    path = f"/pub/{tok}"
    with pin_workers(redis_gateway.server) as (first, second):
        kept = stored(first.request("GET", path))
        hit(second.request("GET", path), of=kept)  # the other worker: the same copy
        assert scripted.count(tok) == 1
        assert redis_keys(path), "nothing kept on Redis"

        for writer, reader in ((second, first), (first, second)):
            before = scripted.count(tok)
            write = writer.request(method, path, body=b"{}")
            assert write.status == 200, write.describe()
            # Only the path's generation stays (it expires by itself): a read that
            # began before the write cannot keep what it read.
            left = redis_keys(path)
            assert [k for k in left if not k.endswith(b":g")] == [], "the write left kept keys"
            assert len(left) == 1, left
            again = stored(reader.request("GET", path))
            assert again.json()["n"] == before + 1, again.describe()
            hit(writer.request("GET", path), of=again)
            assert scripted.count(tok) == before + 1


def test_on_redis_each_identity_has_its_copy_across_workers(
    redis_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    path = f"/me/{tok}"
    alice, bob = bearer(f"alice-{tok}"), bearer(f"bob-{tok}")
    with pin_workers(redis_gateway.server) as (first, second):
        mine = stored(first.request("GET", path, [alice]))
        theirs = stored(second.request("GET", path, [bob]))
        assert hit(second.request("GET", path, [alice]), of=mine).json()["user"] == f"alice-{tok}"
        assert hit(first.request("GET", path, [bob]), of=theirs).json()["user"] == f"bob-{tok}"
    assert scripted.count(tok) == 2


def test_on_redis_the_upstreams_variants_are_shared_across_workers(
    redis_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, echo(("Vary", "Accept-Language")))
    path = f"/pub/{tok}"
    with pin_workers(redis_gateway.server) as (first, second):
        english = stored(first.request("GET", path, [("Accept-Language", "en")]))
        french = stored(second.request("GET", path, [("Accept-Language", "fr")]))
        for connection in (first, second):
            for lang, kept in (("en", english), ("fr", french)):
                reply = hit(connection.request("GET", path, [("Accept-Language", lang)]), of=kept)
                assert reply.json()["lang"] == lang
    assert scripted.count(tok) == 2


# -- the memory budget ---------------------------------------------------------------------------


def test_an_answer_near_the_memory_budget_is_never_a_500(
    tiny_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    """Bodies from well within to well past cache.max_bytes: each is answered whole,
    kept or not."""
    tok = token()
    scripted.script(tok, sized)
    failed = []
    for size in range(600, 1100, 8):
        for _ in range(2):
            reply = get(tiny_gateway, f"/pub/{tok}/{size}")
            if reply.status != 200 or len(reply.body) != size:
                failed.append((size, reply.status, status(reply)))
    assert not failed, f"{len(failed)} answers failed, the first: {failed[:3]}"


@pytest.mark.parametrize("size", [700, 2000])
def test_an_answer_the_memory_budget_cannot_keep_is_not_claimed_stored(
    tiny_gateway: Gateway, scripted: ScriptedUpstream, size: int
) -> None:
    """700 bytes fit the budget alone but not with their key's entry; 2000 do not fit
    at all. Either way: what Cache-Status calls stored is served from the cache next."""
    tok = token()
    scripted.script(tok, sized)
    path = f"/pub/{tok}/{size}"
    first = get(tiny_gateway, path)
    assert first.status == 200 and len(first.body) == size, first.describe()
    second = get(tiny_gateway, path)
    assert second.status == 200, second.describe()
    if "stored" in (status(first) or ""):
        assert HIT_STATUS.match(status(second) or ""), (status(first), status(second))
        assert scripted.count(tok) == 1
    else:
        assert scripted.count(tok) == 2


# -- the storage down --------------------------------------------------------------------------


def test_a_cache_storage_that_is_down_never_fails_a_request(
    down_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    mode = down_gateway.config["cache"]["on_storage_error"]
    workers = sorted(down_gateway.server.workers())
    tok = token()
    path, mine = f"/pub/{tok}", f"/me/{tok}"
    alice = bearer(f"alice-{tok}")

    def check(reply: Reply, target: str) -> None:
        assert reply.elapsed < QUICK, f"took {reply.elapsed:.3f} s: {reply.describe()}"
        if mode == "allow":
            assert reply.status == 200, reply.describe()
            assert status(reply) == STORAGE_ERROR, reply.describe()
            assert reply.json()["target"] == target
        else:
            assert_problem(reply, 503, "service_unavailable", target)
            assert reply.header("Retry-After") == "5", reply.describe()
            assert status(reply) is None, reply.describe()

    sequential = [(get(down_gateway, path), path) for _ in range(4)]
    sequential += [(get(down_gateway, mine, alice), mine) for _ in range(2)]
    for reply, target in sequential:
        check(reply, target)
    burst = concurrently(8, lambda i: http_request(down_gateway.port, "GET", path))
    for reply in burst:
        check(reply, path)
    # allow: every request went upstream, uncached; deny: none did.
    assert scripted.count(tok) == (len(sequential) + len(burst) if mode == "allow" else 0)

    # A write is the upstream's to answer: it stands though its path cannot be dropped.
    write = down_gateway.request("DELETE", path)
    assert write.status == 200 and write.elapsed < QUICK, write.describe()
    assert scripted.count(tok, "DELETE") == 1
    # Uncached routes never touch the storage.
    plain = get(down_gateway, f"/plain/{tok}")
    assert plain.status == 200 and status(plain) is None, plain.describe()

    ready = get(down_gateway, "/readyz")
    checks = ready.json()["checks"]
    if mode == "allow":
        assert ready.status == 200, ready.describe()
        assert checks["cache_storage"] == "unreachable: answers not kept", ready.describe()
    else:
        assert ready.status == 503, ready.describe()
        assert checks["cache_storage"] == "unreachable: cached routes get 503", ready.describe()

    # No worker was wedged or replaced: both still answer, at once, as before.
    with pin_workers(down_gateway.server) as pinned:
        for connection in pinned:
            for target, headers in ((path, []), (mine, [alice])):
                check(connection.request("GET", target, headers), target)
            assert connection.request("GET", f"/plain/{tok}").status == 200
    assert sorted(down_gateway.server.workers()) == workers, "a worker was replaced"
    assert all(pid_alive(pid) for pid in workers)
    assert "Traceback" not in down_gateway.server.log(), down_gateway.server.log()[-4000:]


# -- conditional requests ----------------------------------------------------------------------


def test_if_none_match_is_answered_304_from_the_cache(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, conditional('"v1"', ("Cache-Control", "max-age=30")))
    path = f"/pub/{tok}"
    first = stored(get(memory_gateway, path))
    for condition in ('"v1"', 'W/"v1"', '"v0", "v1"', "*"):
        reply = get(memory_gateway, path, ("If-None-Match", condition))
        assert reply.status == 304 and reply.body == b"", reply.describe()
        assert reply.header_values("ETag") == ['"v1"'], reply.describe()
        assert reply.header_values("Cache-Control") == ["max-age=30"], reply.describe()
        assert reply.header("Content-Type") is None, reply.describe()
        hit_ttl(reply)
        assert reply.header("Age") is not None, reply.describe()
    changed = hit(get(memory_gateway, path, ("If-None-Match", '"v0"')), of=first)
    assert changed.json()["n"] == 1
    assert scripted.count(tok) == 1


def test_if_modified_since_is_answered_304_from_the_cache(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    modified = "Mon, 07 Dec 2026 10:00:00 GMT"
    scripted.script(tok, echo(("Last-Modified", modified)))
    path = f"/pub/{tok}"
    first = stored(get(memory_gateway, path))
    assert first.header_values("Last-Modified") == [modified], first.describe()
    for since in (modified, "Tue, 08 Dec 2026 10:00:00 GMT"):
        reply = get(memory_gateway, path, ("If-Modified-Since", since))
        assert reply.status == 304 and reply.body == b"", reply.describe()
        assert reply.header("Content-Type") is None, reply.describe()
        hit_ttl(reply)
    earlier = get(memory_gateway, path, ("If-Modified-Since", "Sun, 06 Dec 2026 10:00:00 GMT"))
    hit(earlier, of=first)
    assert scripted.count(tok) == 1


def test_a_miss_with_if_none_match_keeps_the_whole_answer_and_answers_304(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, conditional('"v1"'))
    path = f"/pub/{tok}"
    reply = get(memory_gateway, path, ("If-None-Match", '"v1"'))
    assert reply.status == 304 and reply.body == b"", reply.describe()
    assert status(reply) == STORED, reply.describe()
    # The upstream was asked for the whole answer (the client's condition not sent)...
    (asked,) = scripted.received(tok)
    assert "if-none-match" not in asked.header_names, asked.headers
    # ...which was kept for the next client.
    whole = hit(get(memory_gateway, path))
    assert whole.json()["n"] == 1 and whole.header("ETag") == '"v1"'
    assert scripted.count(tok) == 1


def test_an_uncached_route_relays_the_upstreams_304(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    scripted.script(tok, conditional('"v1"', ("Cache-Control", "max-age=30")))
    path = f"/plain/{tok}"
    reply = get(memory_gateway, path, ("If-None-Match", '"v1"'))
    assert reply.status == 304 and reply.body == b"", reply.describe()
    assert reply.header_values("ETag") == ['"v1"'], reply.describe()
    assert status(reply) is None, reply.describe()
    (asked,) = scripted.received(tok)
    assert asked.header_values("If-None-Match") == ['"v1"'], asked.headers
    whole = get(memory_gateway, path, ("If-None-Match", '"v0"'))
    assert whole.status == 200 and whole.json()["n"] == 2, whole.describe()


def test_a_stale_answer_is_revalidated_with_its_etag(
    memory_gateway: Gateway, scripted: ScriptedUpstream
) -> None:
    tok = token()
    current = {"etag": '"v1"'}

    def answer(received: Received, n: int) -> Answer:
        etag = current["etag"]
        fields = (("ETag", etag), ("Cache-Control", "max-age=1"))
        if received.header("If-None-Match") == etag:
            return Answer(304, fields)
        return json_answer({"n": n, "etag": etag}, *fields)

    scripted.script(tok, answer)
    path = f"/pub/{tok}"
    first = stored(get(memory_gateway, path))
    kept_at = time.monotonic()
    assert first.json() == {"n": 1, "etag": '"v1"'}

    time.sleep(max(0.0, kept_at + STALE_AFTER - time.monotonic()))
    refreshed = get(memory_gateway, path)
    kept_at = time.monotonic()
    # The upstream was asked with the kept ETag, said 304, and the kept body was given.
    asked = scripted.received(tok)[-1]
    assert asked.header_values("If-None-Match") == ['"v1"'], asked.headers
    assert refreshed.status == 200 and refreshed.body == first.body, refreshed.describe()
    assert status(refreshed) == "gateway; fwd=stale; fwd-status=304; stored"
    assert refreshed.header("Age") == "0", refreshed.describe()
    hit(get(memory_gateway, path), of=first)
    assert scripted.count(tok) == 2

    # Stale again, and changed meanwhile: the new answer replaces the kept one.
    current["etag"] = '"v2"'
    time.sleep(max(0.0, kept_at + STALE_AFTER - time.monotonic()))
    changed = get(memory_gateway, path)
    assert changed.status == 200 and changed.json() == {"n": 3, "etag": '"v2"'}
    assert status(changed) == "gateway; fwd=stale; fwd-status=200; stored", changed.describe()
    assert scripted.received(tok)[-1].header_values("If-None-Match") == ['"v1"']
    assert hit(get(memory_gateway, path), of=changed).header("ETag") == '"v2"'
    assert scripted.count(tok) == 3


# -- the reference stack (routes.yaml: users.get keeps each caller's copy for 10 s) -------------


def checked(stack: ReferenceStack, reply: Reply) -> Reply:
    leaks = leaked_addresses(reply, stack.upstream_addresses)
    assert not leaks, f"upstream address {leaks} seen: {reply.describe()}"
    return reply


@pytest.fixture
def own_user(reference_stack: ReferenceStack, api: StackClient) -> Iterator[str]:
    """A new user of the demo tenant (the admin's and the member's), deleted afterwards."""
    admin = reference_stack.logins["admin"]
    created = api.post_json(
        "/api/v1/users",
        {"email": unique_email("cache"), "name": "Cass Cached"},
        [admin.bearer],
    )
    assert created.status == 201, created.describe()
    user_id: str = created.json()["id"]
    yield user_id
    api.request("DELETE", f"/api/v1/users/{user_id}", [admin.bearer])


@pytest.fixture
def stack_workers(reference_stack: ReferenceStack) -> Iterator[list[Pinned]]:
    with pin_workers(reference_stack.gateway) as pinned:
        yield pinned


def test_routes_yaml_caches_user_reads() -> None:
    config = yaml.safe_load(ROUTES.read_text())
    (route,) = [r for r in config["routes"] if r["name"] == "users.get"]
    assert route.get("cache") == {"ttl": 10}, route


def test_reference_a_members_second_read_of_their_user_is_a_hit(
    reference_stack: ReferenceStack, stack_workers: list[Pinned]
) -> None:
    member = reference_stack.logins["member"]
    path = f"/api/v1/users/{member.sub}"
    connection = stack_workers[0]
    first = checked(reference_stack, connection.request("GET", path, [member.bearer]))
    assert first.status == 200 and first.json()["id"] == member.sub, first.describe()
    # Other tests read this user too: the first read may find a copy already.
    assert (status(first) or "").startswith("gateway; "), first.describe()
    second = hit(checked(reference_stack, connection.request("GET", path, [member.bearer])), first)
    assert hit_ttl(second) <= 10
    assert second.header("Cache-Control") == "private, max-age=10"
    assert second.header("ETag") == first.header("ETag")


def test_reference_an_admin_and_a_member_get_their_own_copies(
    reference_stack: ReferenceStack, stack_workers: list[Pinned], own_user: str
) -> None:
    admin, member = reference_stack.logins["admin"], reference_stack.logins["member"]
    path = f"/api/v1/users/{own_user}"
    connection = stack_workers[0]

    def read(who: Login) -> Reply:
        return checked(reference_stack, connection.request("GET", path, [who.bearer]))

    as_member = stored(read(member))
    as_admin = stored(read(admin))  # not the member's copy
    assert as_member.json() == as_admin.json() and as_member.json()["id"] == own_user
    hit(read(member), of=as_member)
    hit(read(admin), of=as_admin)


def test_reference_a_patch_by_the_admin_is_seen_by_every_reader_on_every_worker(
    reference_stack: ReferenceStack, stack_workers: list[Pinned], own_user: str
) -> None:
    admin, member = reference_stack.logins["admin"], reference_stack.logins["member"]
    path = f"/api/v1/users/{own_user}"
    old_tags = set()
    for connection in stack_workers:  # each worker keeps the old copy of each caller
        for who in (admin, member):
            reply = checked(reference_stack, connection.request("GET", path, [who.bearer]))
            assert stored(reply).json()["name"] == "Cass Cached"
            hit(connection.request("GET", path, [who.bearer]), of=reply)
            old_tags.add(reply.header("ETag"))

    writer = stack_workers[0]
    body = json.dumps({"name": "Cass Changed"}).encode()
    changed = writer.request(
        "PATCH", path, [admin.bearer, ("Content-Type", "application/json")], body
    )
    assert changed.status == 200 and changed.json()["name"] == "Cass Changed", changed.describe()

    new_tags = set()
    for connection in reversed(stack_workers):  # the other worker first
        for who in (admin, member):
            reply = checked(reference_stack, connection.request("GET", path, [who.bearer]))
            assert stored(reply).json()["name"] == "Cass Changed", reply.describe()
            new_tags.add(reply.header("ETag"))
    assert len(old_tags) == len(new_tags) == 1 and old_tags != new_tags, (old_tags, new_tags)


def test_reference_a_stale_if_match_is_412_problem_json(
    reference_stack: ReferenceStack, stack_workers: list[Pinned], own_user: str
) -> None:
    admin = reference_stack.logins["admin"]
    path = f"/api/v1/users/{own_user}"
    connection = stack_workers[0]

    def read() -> Reply:
        return checked(reference_stack, connection.request("GET", path, [admin.bearer]))

    stale = stored(read()).header("ETag")
    hit(read())
    assert stale
    json_type = ("Content-Type", "application/json")
    first = connection.request(
        "PATCH", path, [admin.bearer, json_type], json.dumps({"name": "First Writer"}).encode()
    )
    assert first.status == 200, first.describe()

    # The kept answer went with the write: the read shows the new ETag, not the stale one.
    current = stored(read())
    assert current.json()["name"] == "First Writer"
    assert current.header("ETag") not in (None, stale), current.describe()

    lost = connection.request(
        "PATCH",
        path,
        [admin.bearer, json_type, ("If-Match", stale)],
        json.dumps({"name": "Lost Update"}).encode(),
    )
    assert_gateway_problem(checked(reference_stack, lost), 412, "precondition_failed", path)
    gone = connection.request("DELETE", path, [admin.bearer, ("If-Match", stale)])
    assert_gateway_problem(checked(reference_stack, gone), 412, "precondition_failed", path)
    # A refused write drops nothing: the current copy is still kept, and unchanged.
    after = hit(read(), of=current)
    assert after.json()["name"] == "First Writer"
