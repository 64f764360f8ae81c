"""Signing keys from a JWKS URL: fetched rarely, cached, and never at a token's bidding.

The URL comes from the config only; a token's `jku`, `x5u` or `kid` never causes a
fetch of another address. An unknown `kid` may trigger one refetch, at most once per
cooldown per worker, so a storm of random kids cannot make the gateway hammer the
issuer, and requests with known keys never wait for it. A failed fetch keeps the
last good keys; with none at all, callers learn when to retry.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cachetools
import httpx
import jwt

from gateway.credentials.keys import key_fits
from gateway.deadline import deadline_at, deadline_transport

log = logging.getLogger("gateway.jwks")

MAX_JWKS_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SigningKey:
    jwk: jwt.PyJWK
    algorithm: str | None  # the key's own "alg" member, if it names one


KeyIndex = dict[str | None, list[SigningKey]]


class KeysUnavailable(Exception):
    """No signing keys could be had; try again after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"no signing keys; retry after {retry_after} s")
        self.retry_after = retry_after


class JwksKeys:
    def __init__(
        self,
        url: str,
        *,
        algorithms: tuple[str, ...],
        cache_seconds: float,
        cooldown_seconds: float,
        timeout: float,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.algorithms = algorithms
        self.cooldown = cooldown_seconds
        self.timeout = timeout
        self._client = client or httpx.Client(
            transport=deadline_transport(),
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
        )
        self._clock = clock
        self._cache: cachetools.TTLCache[str, KeyIndex] = cachetools.TTLCache(
            maxsize=1, ttl=cache_seconds, timer=clock
        )
        self._last_good: KeyIndex | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()
        self.fetches = 0  # how many times the issuer was asked (for tests and metrics)

    def close(self) -> None:
        self._client.close()

    def key_for(self, kid: str | None, algorithm: str) -> SigningKey | None:
        """The known key for a token's kid and alg, refetching once if kid is new."""
        found = _pick(self._keys(), kid, algorithm)
        if found is None:
            found = _pick(self._keys(refetch=True), kid, algorithm)
        return found

    def _cooling(self) -> float:
        """Seconds until the next fetch is allowed (0: now)."""
        if self._last_attempt is None:
            return 0.0
        return max(0.0, self.cooldown - (self._clock() - self._last_attempt))

    def _keys(self, *, refetch: bool = False) -> KeyIndex:
        if not refetch:
            cached = self._cache.get("keys")
            if cached is not None:
                return cached
        if self._cooling() > 0 and self._last_good is not None:
            return self._last_good
        # With keys in hand, nobody waits for another thread's fetch: they use those.
        # Without any (a cold worker), they wait for the fetch under way, not 503.
        if not self._lock.acquire(blocking=self._last_good is None):
            return self._fallback()
        try:
            if self._cooling() > 0:  # another thread fetched while we waited
                return self._cache.get("keys") or self._fallback()
            self._last_attempt = self._clock()
            try:
                keys = self._fetch()
            except Exception as exc:  # any failure: keep serving with what we had
                log.warning("fetching signing keys from %s failed: %s", self.url, exc)
                return self._fallback()
            finally:
                # The cooldown runs from the end of an attempt, however long it took.
                self._last_attempt = self._clock()
            self._cache["keys"] = keys
            self._last_good = keys
            return keys
        finally:
            self._lock.release()

    def _fallback(self) -> KeyIndex:
        if self._last_good is not None:
            return self._last_good
        raise KeysUnavailable(max(1, math.ceil(self._cooling())))

    def _fetch(self) -> KeyIndex:
        self.fetches += 1
        # jwks_timeout bounds the whole fetch, however slowly the issuer answers.
        with (
            deadline_at(time.monotonic() + self.timeout),
            self._client.stream("GET", self.url, headers={"Accept": "application/json"}) as r,
        ):
            r.raise_for_status()
            body = b""
            for chunk in r.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("the key set is larger than 1 MiB")
        document: Any = json.loads(body)
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("the document is not a JWK Set")
        index: KeyIndex = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use") not in (None, "sig"):
                continue
            try:
                jwk = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key type or curve we cannot use: skip it, keep the others
            if any(key_fits(jwk.key, a) for a in self.algorithms):
                alg = entry.get("alg")
                kid = entry.get("kid")
                index.setdefault(kid if isinstance(kid, str) else None, []).append(
                    SigningKey(jwk, alg if isinstance(alg, str) else None)
                )
        if not index:
            raise ValueError("the key set has no key for the configured algorithms")
        return index


def _pick(index: KeyIndex, kid: str | None, algorithm: str) -> SigningKey | None:
    """The one key that may verify a token with this kid and alg, else None."""
    if kid is None:
        # No kid: acceptable only when exactly one key could have signed it.
        candidates = [k for keys in index.values() for k in keys]
    else:
        candidates = index.get(kid, [])
    fitting = [
        k for k in candidates if key_fits(k.jwk.key, algorithm) and k.algorithm in (None, algorithm)
    ]
    return fitting[0] if len(fitting) == 1 or (kid is not None and fitting) else None
