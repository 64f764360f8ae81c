"""Where kept answers live: each worker's memory, or a Redis every worker shares.

Both stores hold, per request key, the names of the fields the upstream's `Vary`
listed (so a lookup knows which of the request's values pick the variant), and per
variant the answer itself. Every key kept for a path is indexed under that path, so
an unsafe method to the path drops them all, whatever scope, variant or query string
they were kept for (RFC 9111 §4.4).

On Redis the index is a set sharing the path's hash tag with its keys (one cluster
slot, so the scripts are atomic there too), and a lookup is one round trip when the
upstream sent no Vary, two when it did. Every call has `storage_timeout_ms` per wait,
through the same bounded connections the rate limits use (ratelimit_storage.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import cachetools
import limits.storage
import redis
import redis.exceptions

from gateway.cache.peers import Peers, peers_folder
from gateway.config.model import CacheSettings, RateLimitSettings
from gateway.ratelimit_storage import CURRENT_CHECK, StorageCheck, make_storage

log = logging.getLogger("gateway.cache")

# Paths' drop counts are kept for this long after their last drop: longer than any
# read can take (every upstream deadline is shorter).
_GENERATION_KEPT = 600.0
_GENERATIONS_PRUNED_ABOVE = 10_000


@dataclass(frozen=True, slots=True)
class Entry:
    """A kept answer as the client is given it, less Age and the cache's own status."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    stored_at: float  # wall-clock seconds: Redis entries are shared across machines
    fresh_until: float  # wall-clock seconds
    age: int  # the upstream's Age when it was kept
    vary: tuple[str, ...]  # the request fields (lower case) that chose this variant

    @property
    def size(self) -> int:
        """Bytes it takes in a worker's memory, Python's objects included (about 2 KiB
        for a small answer, as tracemalloc measures it with its key and index entries)."""
        return len(self.body) + sum(len(n) + len(v) + 170 for n, v in self.headers) + 1200

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for field, value in self.headers:
            if field.lower() == lowered:
                return value
        return None

    def current_age(self, now: float) -> int:
        return self.age + max(0, int(now - self.stored_at))

    def to_bytes(self) -> bytes:
        meta = {
            "status": self.status,
            "headers": self.headers,
            "stored_at": self.stored_at,
            "fresh_until": self.fresh_until,
            "age": self.age,
            "vary": self.vary,
        }
        return json.dumps(meta, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        meta, _, body = data.partition(b"\n")
        fields = json.loads(meta)
        return cls(
            status=int(fields["status"]),
            headers=tuple((str(n), str(v)) for n, v in fields["headers"]),
            body=body,
            stored_at=float(fields["stored_at"]),
            fresh_until=float(fields["fresh_until"]),
            age=int(fields["age"]),
            vary=tuple(fields["vary"]),
        )

    def refreshed(self, headers: list[tuple[str, str]], now: float, lifetime: int) -> Entry:
        """This entry after a 304 (RFC 9111 §4.3.4): the 304's fields replace the kept
        ones of the same name; the body stays."""
        given = {name.lower() for name, _ in headers}
        kept = tuple((n, v) for n, v in self.headers if n.lower() not in given)
        return replace(
            self,
            headers=kept + tuple(headers),
            stored_at=now,
            fresh_until=now + lifetime,
            age=0,
        )


class StorageFailed(Exception):
    """The cache's storage did not answer in time, or failed."""


# A variant's key from the Vary field names the upstream gave.
VariantOf = Callable[[tuple[str, ...]], str]


class Store(Protocol):
    def lookup(self, path: str, key: str, variant_of: VariantOf) -> tuple[Entry | None, int]:
        """The kept answer (or None), and the path's generation: how many times its
        answers were dropped, as far as this store knows."""
        ...

    def get(self, path: str, key: str, variant_of: VariantOf) -> Entry | None: ...

    def put(
        self,
        path: str,
        key: str,
        variant: str,
        entry: Entry,
        keep: float,
        generation: int | None = None,
    ) -> bool:
        """Keeps `entry`; False when it cannot be kept: larger than the store, or the
        path's answers were dropped since `generation` was looked up (a read that
        began before a write must not keep what it read after the write's drop)."""
        ...

    def invalidate(self, path: str) -> int: ...

    def reachable(self) -> bool: ...

    def close(self) -> None: ...


def _path_tag(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class _Held:
    value: Entry | tuple[str, ...]  # an answer, or a key's Vary names
    path: str
    expires: float  # time.monotonic()
    size: int


class MemoryStore:
    """Each worker's own answers, within `max_bytes`; the least recently used go first.

    Not shared, but under gunicorn a path's answers dropped in one worker are dropped
    in its siblings too (peers.py). Redis is for sharing answers across workers and
    instances."""

    def __init__(
        self,
        max_bytes: int,
        on_evict: Callable[[str], None] | None = None,
        peers_dir: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._on_evict = on_evict
        self._items: cachetools.TLRUCache[str, _Held] = _Evicting(
            maxsize=max_bytes,
            ttu=lambda _key, held, _now: held.expires,
            timer=time.monotonic,
            getsizeof=lambda held: held.size,
            on_evict=self._evicted,
        )
        self._by_path: dict[str, set[str]] = {}
        # Per path dropped since start: (generation, when it last changed).
        self._generations: dict[str, tuple[int, float]] = {}
        self.peers: Peers | None = None
        if peers_dir:
            try:
                self.peers = Peers(peers_dir, self.drop_path)
            except OSError as exc:
                log.warning(
                    "the cache cannot listen for its sibling workers (%s): a path's answers "
                    "dropped in another worker stay here until they expire",
                    exc,
                )

    def _evicted(self, key: str, held: _Held) -> None:
        keys = self._by_path.get(held.path)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_path[held.path]
        if (
            self._on_evict is not None
            and isinstance(held.value, Entry)
            and held.expires > time.monotonic()
        ):
            self._on_evict("size")

    @property
    def bytes_used(self) -> int:
        return int(self._items.currsize)

    def lookup(self, path: str, key: str, variant_of: VariantOf) -> tuple[Entry | None, int]:
        if self.peers is not None:
            # A sibling's write told before it answered its client: dropped before this
            # read, whenever the listener would have got to it.
            self.peers.drain()
        with self._lock:
            generation = self._generations.get(path, (0, 0.0))[0]
            names = self._items.get("n:" + key)
            if names is None or not isinstance(names.value, tuple):
                return None, generation
            held = self._items.get("e:" + variant_of(names.value))
        found = held.value if held is not None and isinstance(held.value, Entry) else None
        return found, generation

    def get(self, path: str, key: str, variant_of: VariantOf) -> Entry | None:
        return self.lookup(path, key, variant_of)[0]

    def put(
        self,
        path: str,
        key: str,
        variant: str,
        entry: Entry,
        keep: float,
        generation: int | None = None,
    ) -> bool:
        expires = time.monotonic() + keep
        # Two namespaces: without a Vary, the variant's key is the request key.
        names = _Held(entry.vary, path, expires, 300 + len(key))
        answer = _Held(entry, path, expires, entry.size + len(variant))
        if names.size + answer.size > self._items.maxsize:
            return False  # never both at once: the answer could not be found
        with self._lock:
            if generation is not None and self._generations.get(path, (0, 0.0))[0] != generation:
                return False
            # The answer first: making room for its names then evicts older items,
            # never the answer itself.
            self._items["e:" + variant] = answer
            self._items["n:" + key] = names
            self._by_path.setdefault(path, set()).update(("n:" + key, "e:" + variant))
        return True

    def invalidate(self, path: str) -> int:
        dropped = self.drop_path(path)
        if self.peers is not None:
            self.peers.tell(path)
        return dropped

    def drop_path(self, path: str) -> int:
        """Drops this worker's answers of `path`; how many entries went."""
        with self._lock:
            now = time.monotonic()
            self._generations[path] = (self._generations.get(path, (0, 0.0))[0] + 1, now)
            if len(self._generations) > _GENERATIONS_PRUNED_ABOVE:
                # A generation only has to outlive the reads in flight when it changed.
                self._generations = {
                    p: g for p, g in self._generations.items() if now - g[1] < _GENERATION_KEPT
                }
            keys = self._by_path.pop(path, set())
            dropped = 0  # answers, not the Vary names kept beside them
            for key in keys:
                held = self._items.pop(key, None)
                if held is not None and isinstance(held.value, Entry):
                    dropped += 1
            return dropped

    def reachable(self) -> bool:
        return True

    def close(self) -> None:
        if self.peers is not None:
            self.peers.close()


class _Evicting(cachetools.TLRUCache):  # type: ignore[type-arg]
    """A TLRUCache that says which items it dropped (to keep the path index true)."""

    def __init__(self, *args: Any, on_evict: Callable[[str, _Held], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_evict_item = on_evict

    def popitem(self) -> tuple[str, _Held]:
        key, held = super().popitem()
        self._on_evict_item(key, held)
        return key, held

    def expire(self, time: float | None = None) -> list[tuple[str, _Held]]:
        expired: list[tuple[str, _Held]] = super().expire(time)
        for key, held in expired:
            self._on_evict_item(key, held)
        return expired


# KEYS: the key's Vary names, the variant, the path's index, the path's generation;
# ARGV: the names, the entry, milliseconds to keep both, the generation the read saw.
# The index is a sorted set by expiry: what has expired leaves it at each store, so it
# holds no more than the path's live keys.
_PUT = """
if (redis.call('GET', KEYS[4]) or '0') ~= ARGV[4] then
  return 0
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local expires = ms + tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ms)
redis.call('ZADD', KEYS[3], expires, KEYS[1], expires, KEYS[2])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
return 1
"""
# KEYS: the path's index, the path's generation. Its members share its hash tag, so
# its slot. Returns how many answers (not Vary names) were still there.
_INVALIDATE = """
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 3600000)
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
local answers = 0
for i = 1, #keys do
  if string.find(keys[i], ':e:', 1, true) and redis.call('EXISTS', keys[i]) == 1 then
    answers = answers + 1
  end
end
for i = 1, #keys, 500 do
  redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
end
redis.call('DEL', KEYS[1])
return answers
"""


class RedisStore:
    """Answers every worker and instance shares, in Redis, under `prefix`."""

    def __init__(self, settings: CacheSettings, prefix: str = "gateway:cache") -> None:
        storage = make_storage(
            RateLimitSettings(
                storage=settings.storage, storage_timeout_ms=settings.storage_timeout_ms
            )
        )
        client = getattr(storage, "storage", None)
        if not isinstance(storage, limits.storage.Storage) or client is None:
            raise ValueError(f"no Redis client for {settings.storage!r}")
        self._client: Any = client
        self._budget = settings.storage_timeout_ms / 1000
        self._prefix = prefix
        self._put = self._client.register_script(_PUT)
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._errors = (redis.exceptions.RedisError, OSError, ValueError, KeyError)

    def _keys(self, path: str, key: str) -> tuple[str, str, str]:
        """The key's Vary names, the path's index and the path's generation."""
        base = f"{self._prefix}:{{{_path_tag(path)}}}"
        return f"{base}:v:{key}", f"{base}:i", f"{base}:g"

    def _variant_key(self, path: str, variant: str) -> str:
        return f"{self._prefix}:{{{_path_tag(path)}}}:e:{variant}"

    def _call(self, run: Callable[[], Any]) -> Any:
        check = CURRENT_CHECK.set(StorageCheck(self._budget))
        try:
            return run()
        except self._errors as exc:
            raise StorageFailed(str(exc) or type(exc).__name__) from None
        finally:
            CURRENT_CHECK.reset(check)

    def lookup(self, path: str, key: str, variant_of: VariantOf) -> tuple[Entry | None, int]:
        names_key, _, generation_key = self._keys(path, key)
        # Most answers have no Vary: their variant is asked for in the same round trip.
        plain = self._variant_key(path, variant_of(()))

        def run() -> tuple[Entry | None, int]:
            names, data, counted = self._client.mget([names_key, plain, generation_key])
            generation = int(counted) if counted is not None else 0
            if names is None:
                return None, generation
            vary = tuple(n for n in names.decode().split(",") if n)
            if vary:
                data = self._client.get(self._variant_key(path, variant_of(vary)))
            return (None if data is None else Entry.from_bytes(data)), generation

        result: tuple[Entry | None, int] = self._call(run)
        return result

    def get(self, path: str, key: str, variant_of: VariantOf) -> Entry | None:
        return self.lookup(path, key, variant_of)[0]

    def put(
        self,
        path: str,
        key: str,
        variant: str,
        entry: Entry,
        keep: float,
        generation: int | None = None,
    ) -> bool:
        names_key, index_key, generation_key = self._keys(path, key)
        keys = [names_key, self._variant_key(path, variant), index_key, generation_key]
        seen = "0" if generation is None else str(generation)
        if generation is None:
            keys[3] = f"{generation_key}:unchecked"  # never set: always '0'
        args = [",".join(entry.vary), entry.to_bytes(), max(1, int(keep * 1000)), seen]
        return bool(self._call(lambda: self._put(keys=keys, args=args)))

    def invalidate(self, path: str) -> int:
        _, index_key, generation_key = self._keys(path, "")
        return int(self._call(lambda: self._invalidate(keys=[index_key, generation_key])))

    def reachable(self) -> bool:
        try:
            return bool(self._call(self._client.ping))
        except StorageFailed:
            return False

    def close(self) -> None:
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            pool.disconnect()


def make_store(settings: CacheSettings, on_evict: Callable[[str], None] | None = None) -> Store:
    if settings.storage.startswith("memory://"):
        return MemoryStore(settings.max_bytes, on_evict, peers_folder())
    return RedisStore(settings)
