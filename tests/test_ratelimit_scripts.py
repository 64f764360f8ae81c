"""The one-call Redis scripts: one round trip per check, on `limits`' own counters.

Every case runs on a real Redis, never a fake: the shared one at 127.0.0.1:6379 under
a bucket of the test's own (whose keys it deletes afterwards), or, for Redis Cluster
and Sentinel, servers the test starts on free ports and stops by PID. Round trips are
counted by wrapping the storage's Redis client: each command it sends is one round
trip, since the gateway never pipelines.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import limits
import pytest
import redis
from limits.util import WindowStats

from gateway.config.load import parse_rate_limits
from gateway.config.model import RateLimit, RateLimitSettings
from gateway.ratelimit import Counters
from tests.integration.redis_support import (
    KEY_PREFIX,
    OwnRedis,
    command_log,
    delete_counters,
    release,
    require_shared_redis,
    start_own_cluster,
    start_own_sentinel,
)

STRATEGIES = ["moving-window", "fixed-window", "sliding-window-counter"]


def limits_of(*texts: str) -> tuple[RateLimit, ...]:
    return parse_rate_limits(list(texts))


def items_of(*texts: str) -> list[limits.RateLimitItem]:
    return [limits.parse(text) for text in texts]


@pytest.fixture
def shared_url() -> str:
    return require_shared_redis()


@pytest.fixture
def bucket(shared_url: str) -> Iterator[str]:
    """A bucket of this test's own; its counters are deleted afterwards."""
    name = "unit-scripts-" + uuid.uuid4().hex
    yield name
    for suffix in ("", "-limits", "-gateway"):
        delete_counters(shared_url, name + suffix)


def counters_on(url: str, strategy: str) -> Counters:
    return Counters(RateLimitSettings(storage=url, strategy=strategy))


# --- one round trip ------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("texts", [("3/minute",), ("3/minute", "10/hour", "20/day")])
def test_each_hit_and_each_test_is_one_call(
    strategy: str, texts: tuple[str, ...], shared_url: str, bucket: str, monkeypatch: Any
) -> None:
    counters = counters_on(shared_url, strategy)
    sent = command_log(counters, monkeypatch)
    limits_ = limits_of(*texts)
    verdicts = []
    for _ in range(5):  # three allowed, two refused
        verdicts.append(counters.hit(limits_, bucket, "k"))
        assert sent.take() == ["EVALSHA"], strategy
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0, 0]
    refused = counters.test(limits_, bucket, "k")
    assert refused is not None and refused.limit.text == "3/minute"
    assert sent.take() == ["EVALSHA"]
    assert counters.test(limits_, bucket, "another") is None
    assert sent.take() == ["EVALSHA"]


# --- the same counters as limits ----------------------------------------------------------


def as_told(stats: WindowStats, item: limits.RateLimitItem) -> float:
    """The reset the client is told (a reset not in the future means a full period)."""
    now = time.time()
    return stats.reset_time if stats.reset_time > now else now + item.get_expiry()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_window_agrees_with_limits_own_view(
    strategy: str, shared_url: str, bucket: str
) -> None:
    """After each hit through the scripts, limits' get_window_stats on the same keys
    tells the same remaining and reset, for every limit of the request."""
    counters = counters_on(shared_url, strategy)
    assert counters.windows is not None
    items = items_of("3/minute", "5/hour")
    for _ in range(5):
        windows = counters.windows.run(items, bucket, "k", charge=True)
        for item, ours in zip(items, windows.stats, strict=True):
            theirs = counters.limiter.get_window_stats(item, bucket, "k")
            assert ours.remaining == theirs.remaining, (strategy, item, ours, theirs)
            # A moment apart: fixed-window reads a TTL in whole seconds, and a fresh
            # sliding-window counter reads as "now" or a whole period later.
            assert as_told(ours, item) == pytest.approx(as_told(theirs, item), abs=1.01)
            if strategy == "moving-window":  # the same oldest entry, to the digit
                assert ours.reset_time == theirs.reset_time
    assert windows.refused == 0  # the fourth and fifth hits: 3/minute has no room


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_counts_made_by_limits_are_counted_on_and_back(
    strategy: str, shared_url: str, bucket: str
) -> None:
    """limits' own hit and the gateway's script share one counter, either way round."""
    counters = counters_on(shared_url, strategy)
    three = limits_of("3/minute")
    item = limits.parse("3/minute")
    assert counters.limiter.hit(item, bucket, "k")
    verdict = counters.hit(three, bucket, "k")
    assert verdict.allowed and verdict.remaining == 1
    assert counters.limiter.get_window_stats(item, bucket, "k").remaining == 1
    assert counters.limiter.hit(item, bucket, "k")
    assert not counters.limiter.test(item, bucket, "k")
    assert not counters.hit(three, bucket, "k").allowed
    assert counters.test(three, bucket, "k") is not None


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_keys_and_their_data_are_those_limits_writes(
    strategy: str, shared_url: str, bucket: str
) -> None:
    """The same hits, with a window boundary between them, through limits under one
    bucket and through the scripts under another: the same keys, types, counts and
    expiries (moving-window entries are timestamps, so only their number is compared)."""
    counters = counters_on(shared_url, strategy)
    item, ours = limits.parse("3/second"), limits_of("3/second")
    theirs_bucket, ours_bucket = bucket + "-limits", bucket + "-gateway"
    for pause in (0.0, 0.0, 1.05, 0.0):  # past the one-second window before the third
        time.sleep(pause)
        assert counters.limiter.hit(item, theirs_bucket, "k")
        assert counters.hit(ours, ours_bucket, "k").allowed
    client = redis.Redis.from_url(shared_url, socket_timeout=2)
    try:

        def snapshot(name: str) -> dict[str, tuple[str, Any, int]]:
            found = {}
            for pattern in (f"{KEY_PREFIX}{name}/*", f"LIMITS:{{LIMITER/{name}/*"):
                for raw in client.scan_iter(match=pattern):
                    kind = client.type(raw).decode()
                    value = client.llen(raw) if kind == "list" else int(client.get(raw) or 0)
                    found[raw.decode().replace(name, "<bucket>")] = (kind, value, client.pttl(raw))
            return found

        theirs, mine = snapshot(theirs_bucket), snapshot(ours_bucket)
    finally:
        client.close()
    assert theirs and theirs.keys() == mine.keys(), (theirs, mine)
    for key, (kind, value, ttl) in theirs.items():
        assert mine[key][:2] == (kind, value), (strategy, key, theirs, mine)
        assert mine[key][2] == pytest.approx(ttl, abs=250), (strategy, key, theirs, mine)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_refused_request_changes_no_counter(strategy: str, shared_url: str, bucket: str) -> None:
    counters = counters_on(shared_url, strategy)
    both = limits_of("5/hour", "2/minute")
    assert [counters.hit(both, bucket, "k").allowed for _ in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    hour = limits.parse("5/hour")
    assert counters.limiter.get_window_stats(hour, bucket, "k").remaining == 3


# --- Redis Cluster and Sentinel ------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[str]:
    node = start_own_cluster(tmp_path)
    try:
        yield f"redis+cluster://127.0.0.1:{node.port}"
    finally:
        node.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_on_a_cluster_each_limit_is_one_call_of_its_own(
    strategy: str, cluster: str, monkeypatch: Any, request: pytest.FixtureRequest
) -> None:
    """A limit's keys hash to a slot of their own, so one call cannot cover two limits
    there: one limit costs one call, several are tested one by one, then counted."""
    counters = counters_on(cluster, strategy)
    request.addfinalizer(lambda: release(counters))
    assert counters.windows is not None and not counters.windows.one_call_for_all
    with pytest.raises(redis.RedisClusterException):
        counters.windows.run(items_of("2/minute", "5/hour"), "b", "k", charge=True)
    sent = command_log(counters, monkeypatch)

    one = limits_of("3/minute")
    assert [counters.hit(one, "b1", "k").remaining for _ in range(3)] == [2, 1, 0]
    assert sent.take() == ["EVALSHA"] * 3

    both = limits_of("5/hour", "2/minute")
    verdicts = [counters.hit(both, "b2", "k") for _ in range(3)]
    assert [(v.allowed, v.remaining, v.limit.text) for v in verdicts] == [
        (True, 1, "2/minute"),
        (True, 0, "2/minute"),
        (False, 0, "2/minute"),
    ]
    # two tests and two counts each, then the refused one stops at its test
    assert sent.take() == ["EVALSHA"] * 10
    hour = limits.parse("5/hour")
    assert counters.limiter.get_window_stats(hour, "b2", "k").remaining == 3


def test_on_sentinel_one_request_is_one_call_to_the_primary(
    tmp_path: Path, monkeypatch: Any, request: pytest.FixtureRequest
) -> None:
    primary = OwnRedis(tmp_path).start()
    sentinel = start_own_sentinel(tmp_path, primary, "gateway-primary")
    try:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/gateway-primary"
        counters = counters_on(url, "moving-window")
        request.addfinalizer(lambda: release(counters))
        assert counters.windows is not None and counters.windows.one_call_for_all
        sent = command_log(counters, monkeypatch)
        both = limits_of("2/minute", "5/hour")
        assert [counters.hit(both, "b", "k").allowed for _ in range(3)] == [True, True, False]
        assert sent.take() == ["EVALSHA"] * 3
        on_primary = redis.Redis(host="127.0.0.1", port=primary.port)
        try:
            assert on_primary.llen(f"{KEY_PREFIX}b/k/5/1/hour") == 2
        finally:
            on_primary.close()
    finally:
        sentinel.close()
        primary.close()
