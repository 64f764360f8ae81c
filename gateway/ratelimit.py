"""Rate-limit counting: the `limits` package's strategies over one shared storage.

flask-limiter is built on `limits`; the gateway uses `limits` directly because its
own dispatch, not Flask's view decorators, decides which limits a request meets.
On Redis, each check is one atomic script call on `limits`' own keys
(gateway.ratelimit_scripts), which also returns what the response headers need, so
limits hold exactly across processes and hosts sharing one Redis at one round trip
per check. Storage calls time out in tens of milliseconds, and every storage failure
arrives as one StorageUnavailable.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import limits
import limits.errors
import limits.storage
import limits.strategies
import redis

from gateway.config.model import RateLimit, RateLimitSettings
from gateway.ratelimit_scripts import RedisWindows, Windows

log = logging.getLogger("gateway.ratelimit")

_STRATEGIES: dict[str, type[limits.strategies.RateLimiter]] = {
    "moving-window": limits.strategies.MovingWindowRateLimiter,
    "fixed-window": limits.strategies.FixedWindowRateLimiter,
    "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
}
WARN_EVERY_SECONDS = 30.0


class StorageUnavailable(Exception):
    """The counters could not be reached (or answered too slowly)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one check, with what the client is told about its budget."""

    allowed: bool
    limit: RateLimit  # the limit that decides the headers: the one closest to running out
    remaining: int
    reset_at: float  # epoch seconds when the window frees up

    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_at - time.time()))


def _reset_at(reported: float, limit: RateLimit) -> float:
    """When the window frees up: the storage's answer, unless it is not in the future
    (limits' sliding-window counter on Redis reports "now" for a fresh counter)."""
    now = time.time()
    return reported if reported > now else now + limit.seconds


def make_storage(settings: RateLimitSettings) -> limits.storage.Storage:
    """The storage for `settings.storage`, with short socket timeouts for Redis."""
    uri = settings.storage
    scheme = urlsplit(uri).scheme
    if scheme == "memory":
        return _sync(limits.storage.storage_from_string(uri))
    timeout = settings.storage_timeout_ms / 1000
    if scheme in ("redis", "rediss", "redis+unix"):
        # Our own pool: redis-py's 5 s default timeout and its retries would let a
        # frozen Redis hold every worker thread for seconds.
        pool = redis.ConnectionPool.from_url(
            uri.replace("redis+unix://", "unix://"),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry_on_timeout=False,
            retry=None,
        )
        return limits.storage.RedisStorage(uri, connection_pool=pool, wrap_exceptions=True)
    return _sync(
        limits.storage.storage_from_string(
            uri, wrap_exceptions=True, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    )


def _sync(storage: object) -> limits.storage.Storage:
    if not isinstance(storage, limits.storage.Storage):  # only async:// URIs give others
        raise ValueError("an async rate-limit storage cannot serve the gateway")
    return storage


class Counters:
    """Counts hits per (bucket, client key) under a route's limits.

    On Redis every check is one atomic script call that decides every limit of the
    request, charges all or none, and returns the windows for the headers
    (gateway.ratelimit_scripts); memory:// goes through `limits` itself.
    """

    def __init__(self, settings: RateLimitSettings) -> None:
        self.settings = settings
        self.storage = make_storage(settings)
        # memory:// counts through it; on Redis it reads the counters the scripts write.
        self.limiter = _STRATEGIES[settings.strategy](self.storage)
        self.windows = (
            RedisWindows(self.storage, settings.strategy)
            if isinstance(self.storage, limits.storage.RedisStorage)
            else None
        )
        self._errors: tuple[type[Exception], ...] = (
            limits.errors.StorageError,
            *(self.windows.errors if self.windows is not None else ()),
        )
        self._last_warning = 0.0
        self.storage_errors = 0
        self._items: dict[str, limits.RateLimitItem] = {}

    def _item(self, limit: RateLimit) -> limits.RateLimitItem:
        item = self._items.get(limit.text)
        if item is None:  # parsed once per limit text; the config has only a few
            item = self._items[limit.text] = limits.parse(limit.text)
        return item

    def hit(self, limits_: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict:
        """Count one request against every limit; raise StorageUnavailable on failure.

        With several limits, a request one of them refuses is charged to none. On
        Redis (except a cluster) that holds atomically, in one call; elsewhere they are
        all tested first, then counted, and between the two a concurrent request can
        still win the last slot (the count itself stays atomic per limit).
        """
        try:
            if self.windows is None:
                return self._hit_with_limits(limits_, bucket, key)
            if self.windows.one_call_for_all or len(limits_) == 1:
                return self._verdict(limits_, self._run(limits_, bucket, key, charge=True))
            refused = self._test_on_redis(limits_, bucket, key)
            if refused is not None:
                return refused
            return self._hit_each_on_redis(limits_, bucket, key)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    def test(self, limits_: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict | None:
        """The first limit already used up for this key (without counting), or None."""
        try:
            if self.windows is None:
                return self._test_with_limits(limits_, bucket, key)
            return self._test_on_redis(limits_, bucket, key)
        except self._errors as exc:
            raise self._unavailable(exc) from None

    # -- Redis: the gateway's scripts ------------------------------------------------

    def _run(
        self, limits_: tuple[RateLimit, ...], bucket: str, key: str, *, charge: bool
    ) -> Windows:
        assert self.windows is not None
        items = [self._item(limit) for limit in limits_]
        return self.windows.run(items, bucket, key, charge=charge)

    def _test_on_redis(
        self, limits_: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict | None:
        assert self.windows is not None
        if self.windows.one_call_for_all:
            verdict = self._verdict(limits_, self._run(limits_, bucket, key, charge=False))
            return None if verdict.allowed else verdict
        for limit in limits_:
            verdict = self._verdict((limit,), self._run((limit,), bucket, key, charge=False))
            if not verdict.allowed:
                return verdict
        return None

    def _hit_each_on_redis(self, limits_: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict:
        """One call per limit, for a cluster: the limits' keys live in different slots."""
        verdict: Verdict | None = None
        for limit in limits_:
            current = self._verdict((limit,), self._run((limit,), bucket, key, charge=True))
            if not current.allowed:
                return current
            if verdict is None or current.remaining < verdict.remaining:
                verdict = current
        assert verdict is not None
        return verdict

    @staticmethod
    def _verdict(limits_: tuple[RateLimit, ...], windows: Windows) -> Verdict:
        """The refusing limit, or else the one closest to running out (the first of
        those that tie)."""
        if windows.refused is not None:
            limit = limits_[windows.refused]
            stats = windows.stats[windows.refused]
            return Verdict(False, limit, 0, _reset_at(stats.reset_time, limit))
        verdict: Verdict | None = None
        for limit, stats in zip(limits_, windows.stats, strict=True):
            remaining = max(0, stats.remaining)
            if verdict is None or remaining < verdict.remaining:
                verdict = Verdict(True, limit, remaining, _reset_at(stats.reset_time, limit))
        assert verdict is not None
        return verdict

    # -- memory:// : limits' strategies ----------------------------------------------

    def _hit_with_limits(self, limits_: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict:
        if len(limits_) > 1:
            refused = self._test_with_limits(limits_, bucket, key)
            if refused is not None:
                return refused
        verdict: Verdict | None = None
        for limit in limits_:
            item = self._item(limit)
            allowed = self.limiter.hit(item, bucket, key)
            stats = self.limiter.get_window_stats(item, bucket, key)
            current = Verdict(
                allowed, limit, max(0, stats.remaining), _reset_at(stats.reset_time, limit)
            )
            if not allowed:
                return current
            if verdict is None or current.remaining < verdict.remaining:
                verdict = current
        assert verdict is not None
        return verdict

    def _test_with_limits(
        self, limits_: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict | None:
        for limit in limits_:
            item = self._item(limit)
            if not self.limiter.test(item, bucket, key):
                stats = self.limiter.get_window_stats(item, bucket, key)
                return Verdict(False, limit, 0, _reset_at(stats.reset_time, limit))
        return None

    # -- health and failures ---------------------------------------------------------

    def reachable(self) -> bool:
        try:
            return bool(self.storage.check())
        except Exception:
            return False

    def _unavailable(self, exc: Exception) -> StorageUnavailable:
        self._storage_failed(exc)
        return StorageUnavailable(str(exc))

    def _storage_failed(self, exc: Exception) -> None:
        self.storage_errors += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(
                "rate-limit storage failed (%s); on_storage_error=%s applies. %d failures so "
                "far in this worker.",
                exc,
                self.settings.on_storage_error,
                self.storage_errors,
            )
