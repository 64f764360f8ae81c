"""Rate-limit counting: the `limits` package's strategies over one shared storage.

flask-limiter is built on `limits`; the gateway uses `limits` directly because its
own dispatch, not Flask's view decorators, decides which limits a request meets.
On Redis, each check is one atomic script call on `limits`' own keys
(gateway.ratelimit_scripts), which also returns what the response headers need, so
limits hold exactly across processes and hosts sharing one Redis at one round trip
per check. Every storage failure arrives as one StorageUnavailable, and none holds
a check for long (gateway.ratelimit_storage).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import limits
import limits.errors
import limits.storage
import limits.strategies

from gateway.config.model import RateLimit, RateLimitSettings
from gateway.observability import StorageFailures
from gateway.problems import ServiceUnavailable
from gateway.ratelimit_scripts import RedisWindows, Windows
from gateway.ratelimit_storage import CURRENT_CHECK, StorageCheck, make_storage

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
        self._budget = settings.storage_timeout_ms / 1000
        self.failures = StorageFailures(
            log, "rate-limit storage", settings.on_storage_error, WARN_EVERY_SECONDS
        )
        self._items: dict[str, limits.RateLimitItem] = {}

    def _item(self, limit: RateLimit) -> limits.RateLimitItem:
        item = self._items.get(limit.text)
        if item is None:  # parsed once per limit text; the config has only a few
            item = self._items[limit.text] = limits.parse(limit.text)
        return item

    def hit(self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict:
        """Count one request against every limit; raise StorageUnavailable on failure.

        With several limits, a request one of them refuses is charged to none. On
        Redis (except a cluster) that holds atomically, in one call; elsewhere they are
        all tested first, then counted, and between the two a concurrent request can
        still win the last slot (the count itself stays atomic per limit).
        """
        # One check for every call it makes (one per limit on a cluster).
        check = CURRENT_CHECK.set(StorageCheck(self._budget))
        try:
            if self.windows is None:
                return self._hit_with_limits(rate_limits, bucket, key)
            if self.windows.one_call_for_all or len(rate_limits) == 1:
                return self._verdict(rate_limits, self._run(rate_limits, bucket, key, charge=True))
            refused = self._test_on_redis(rate_limits, bucket, key)
            if refused is not None:
                return refused
            return self._hit_each_on_redis(rate_limits, bucket, key)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        finally:
            CURRENT_CHECK.reset(check)

    def test(self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str) -> Verdict | None:
        """The first limit already used up for this key (without counting), or None."""
        check = CURRENT_CHECK.set(StorageCheck(self._budget))
        try:
            if self.windows is None:
                return self._test_with_limits(rate_limits, bucket, key)
            return self._test_on_redis(rate_limits, bucket, key)
        except self._errors as exc:
            raise self._unavailable(exc) from None
        finally:
            CURRENT_CHECK.reset(check)

    # -- Redis: the gateway's scripts ------------------------------------------------

    def _run(
        self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str, *, charge: bool
    ) -> Windows:
        assert self.windows is not None
        items = [self._item(limit) for limit in rate_limits]
        return self.windows.run(items, bucket, key, charge=charge)

    def _test_on_redis(
        self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict | None:
        assert self.windows is not None
        if self.windows.one_call_for_all:
            verdict = self._verdict(rate_limits, self._run(rate_limits, bucket, key, charge=False))
            return None if verdict.allowed else verdict
        for limit in rate_limits:
            verdict = self._verdict((limit,), self._run((limit,), bucket, key, charge=False))
            if not verdict.allowed:
                return verdict
        return None

    def _hit_each_on_redis(
        self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict:
        """One call per limit, for a cluster: the limits' keys live in different slots."""
        verdict: Verdict | None = None
        for limit in rate_limits:
            current = self._verdict((limit,), self._run((limit,), bucket, key, charge=True))
            if not current.allowed:
                return current
            if verdict is None or current.remaining < verdict.remaining:
                verdict = current
        assert verdict is not None
        return verdict

    @staticmethod
    def _verdict(rate_limits: tuple[RateLimit, ...], windows: Windows) -> Verdict:
        """The refusing limit, or else the one closest to running out (the first of
        those that tie)."""
        if windows.refused is not None:
            limit = rate_limits[windows.refused]
            stats = windows.stats[windows.refused]
            return Verdict(False, limit, 0, _reset_at(stats.reset_time, limit))
        verdict: Verdict | None = None
        for limit, stats in zip(rate_limits, windows.stats, strict=True):
            remaining = max(0, stats.remaining)
            if verdict is None or remaining < verdict.remaining:
                verdict = Verdict(True, limit, remaining, _reset_at(stats.reset_time, limit))
        assert verdict is not None
        return verdict

    # -- memory:// : limits' strategies ----------------------------------------------

    def _hit_with_limits(
        self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict:
        if len(rate_limits) > 1:
            refused = self._test_with_limits(rate_limits, bucket, key)
            if refused is not None:
                return refused
        verdict: Verdict | None = None
        for limit in rate_limits:
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
        self, rate_limits: tuple[RateLimit, ...], bucket: str, key: str
    ) -> Verdict | None:
        for limit in rate_limits:
            item = self._item(limit)
            if not self.limiter.test(item, bucket, key):
                stats = self.limiter.get_window_stats(item, bucket, key)
                return Verdict(False, limit, 0, _reset_at(stats.reset_time, limit))
        return None

    # -- health and failures ---------------------------------------------------------

    def reachable(self) -> bool:
        check = CURRENT_CHECK.set(StorageCheck(self._budget))
        try:
            return bool(self.storage.check())
        except Exception:
            return False
        finally:
            CURRENT_CHECK.reset(check)

    def _unavailable(self, exc: Exception) -> StorageUnavailable:
        self._storage_failed(exc)
        return StorageUnavailable(str(exc))

    def _storage_failed(self, exc: Exception) -> None:
        self.failures.failed(exc)

    @property
    def storage_errors(self) -> int:
        return self.failures.count


def storage_down(counters: Counters) -> ServiceUnavailable | None:
    """What to answer when the counters cannot be reached: None lets traffic pass."""
    if counters.settings.on_storage_error == "allow":
        return None
    return ServiceUnavailable(
        "Rate limits cannot be checked right now.", headers={"Retry-After": "5"}
    )
