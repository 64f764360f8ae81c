"""The cache's stores: memory (with its byte budget and its peers) and a real Redis."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from gateway.cache.peers import Peers, socket_name
from gateway.cache.store import Entry, MemoryStore, RedisStore, StorageFailed, Store
from gateway.config.model import CacheSettings
from tests.integration.redis_support import require_shared_redis


def entry(body: bytes = b"{}", vary: tuple[str, ...] = (), lifetime: float = 30) -> Entry:
    now = time.time()
    return Entry(
        status=200,
        headers=(("Content-Type", "application/json"), ("ETag", '"t"')),
        body=body,
        stored_at=now,
        fresh_until=now + lifetime,
        age=0,
        vary=vary,
    )


def plain(names: tuple[str, ...]) -> str:
    return "variant:" + ",".join(names)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        made: Store = MemoryStore(1 << 20)
    else:
        require_shared_redis()
        made = RedisStore(
            CacheSettings(storage="redis://127.0.0.1:6379/0"),
            prefix=f"test:cache:{uuid.uuid4().hex[:8]}",
        )
    yield made
    made.close()


def test_an_entry_is_kept_and_read_back_whole(store: Store) -> None:
    path = f"/items/{uuid.uuid4().hex}"
    kept = entry(body="Zoë".encode() + bytes(range(256)))
    store.put(path, "k1", plain(()), kept, 30)
    assert store.get(path, "k1", plain) == kept
    assert store.get(path, "k2", plain) is None


def test_a_vary_entry_is_found_by_its_variant(store: Store) -> None:
    path = f"/items/{uuid.uuid4().hex}"
    chosen: list[tuple[str, ...]] = []

    def variant(names: tuple[str, ...]) -> str:
        chosen.append(names)
        return "variant-en" if names else "variant-none"

    store.put(path, "k", "variant-en", entry(vary=("accept-language",)), 30)
    found = store.get(path, "k", variant)
    assert found is not None and found.vary == ("accept-language",)
    assert ("accept-language",) in chosen
    assert store.get(path, "k", lambda names: "variant-fr" if names else "x") is None


def test_invalidation_drops_every_key_of_the_path_only(store: Store) -> None:
    path, other = f"/items/{uuid.uuid4().hex}", f"/items/{uuid.uuid4().hex}"
    store.put(path, "a", plain(()), entry(), 30)
    store.put(path, "b", plain(()) + "b", entry(), 30)
    store.put(other, "c", "other-variant", entry(), 30)  # keys are digests of the path too
    assert store.invalidate(path) == 2  # the answers; their Vary names go too
    assert store.get(path, "a", plain) is None
    assert store.get(path, "b", lambda names: plain(names) + "b") is None
    assert store.get(other, "c", lambda _: "other-variant") is not None


def test_entries_expire(store: Store) -> None:
    path = f"/items/{uuid.uuid4().hex}"
    store.put(path, "k", plain(()), entry(), 0.2)
    assert store.get(path, "k", plain) is not None
    time.sleep(0.35)
    assert store.get(path, "k", plain) is None


def test_the_memory_budget_evicts_the_least_recently_used() -> None:
    evicted: list[str] = []
    store = MemoryStore(20_000, on_evict=evicted.append)
    for n in range(6):
        store.put("/p", f"k{n}", f"v{n}", entry(body=b"x" * 4_000), 30)
    assert store.bytes_used <= 20_000
    assert store.get("/p", "k0", lambda names: "v0") is None
    assert store.get("/p", "k5", lambda names: "v5") is not None
    assert evicted and set(evicted) == {"size"}
    # The path index forgets evicted keys: invalidation counts only what was there.
    remaining = sum(
        store.get("/p", f"k{n}", lambda _names, n=n: f"v{n}") is not None for n in range(6)
    )
    assert 0 < remaining < 6
    assert store.invalidate("/p") == remaining


def test_an_answer_larger_than_the_budget_is_not_kept() -> None:
    store = MemoryStore(10_000)
    store.put("/p", "k", "v", entry(body=b"x" * 20_000), 30)
    assert store.get("/p", "k", lambda names: "v") is None


def test_a_redis_that_does_not_answer_is_a_storage_failure() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisStore(CacheSettings(storage=f"redis://127.0.0.1:{port}/0", storage_timeout_ms=50))
    started = time.monotonic()
    with pytest.raises(StorageFailed):
        store.get("/p", "k", plain)
    with pytest.raises(StorageFailed):
        store.put("/p", "k", "v", entry(), 30)
    with pytest.raises(StorageFailed):
        store.invalidate("/p")
    assert not store.reachable()
    assert time.monotonic() - started < 2


def test_redis_keys_of_a_path_share_one_cluster_slot() -> None:
    require_shared_redis()
    prefix = f"test:cache:{uuid.uuid4().hex[:8]}"
    store = RedisStore(CacheSettings(storage="redis://127.0.0.1:6379/0"), prefix=prefix)
    store.put("/same", "k", "v", entry(), 30)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = [k.decode() for k in client.scan_iter(f"{prefix}:*")]
        tags = {k.split("{", 1)[1].split("}", 1)[0] for k in keys}
        assert len(keys) == 3 and len(tags) == 1
        assert 0 < client.pttl(f"{prefix}:{{{tags.pop()}}}:i") <= 30_000
    finally:
        store.invalidate("/same")
        client.close()


# -- peers: the other workers of one gateway ----------------------------------------------


def test_a_path_dropped_in_one_worker_is_dropped_in_its_peers(tmp_path: Path) -> None:
    folder = str(tmp_path)
    one = MemoryStore(1 << 20)
    two = MemoryStore(1 << 20)
    # Two workers in one process: sockets named by fake pids.
    peers_one = _peers(folder, 101, one)
    peers_two = _peers(folder, 102, two)
    one.peers, two.peers = peers_one, peers_two
    try:
        for store in (one, two):
            store.put("/users/1", "k", "v", entry(), 30)
            store.put("/users/2", "k2", "v2", entry(), 30)
        assert one.invalidate("/users/1") == 1
        deadline = time.monotonic() + 2
        while two.get("/users/1", "k", lambda _: "v") is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert two.get("/users/1", "k", lambda _: "v") is None
        assert two.get("/users/2", "k2", lambda _: "v2") is not None
    finally:
        peers_one.close()
        peers_two.close()


def test_a_dead_peers_socket_is_removed_when_told(tmp_path: Path) -> None:
    folder = str(tmp_path)
    stale = tmp_path / socket_name(999_999)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(stale))  # bound, then closed: nobody listens any more
    store = MemoryStore(1 << 20)
    peers = _peers(folder, 103, store)
    try:
        assert peers.tell("/x") == 0
        assert not stale.exists()
    finally:
        peers.close()


def _peers(folder: str, pid: int, store: MemoryStore) -> Peers:
    real = os.getpid
    os.getpid = lambda: pid  # type: ignore[assignment]
    try:
        return Peers(folder, store.drop_path)
    finally:
        os.getpid = real  # type: ignore[assignment]


def test_a_put_after_the_paths_drop_is_refused(store: Store) -> None:
    """A read that looked the path up before a write's drop keeps nothing after it."""
    path = f"/items/{uuid.uuid4().hex}"
    _, before = store.lookup(path, "k", plain)
    store.invalidate(path)
    assert not store.put(path, "k", plain(()), entry(), 30, before)
    assert store.get(path, "k", plain) is None
    _, now = store.lookup(path, "k", plain)
    assert now != before
    assert store.put(path, "k", plain(()), entry(), 30, now)
    assert store.get(path, "k", plain) is not None


def test_the_redis_index_holds_only_live_keys() -> None:
    require_shared_redis()
    prefix = f"test:cache:{uuid.uuid4().hex[:8]}"
    store = RedisStore(CacheSettings(storage="redis://127.0.0.1:6379/0"), prefix=prefix)
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        for n in range(50):
            store.put("/many", f"k{n}", f"v{n}", entry(), 0.05)
        time.sleep(0.1)
        store.put("/many", "last", "last-v", entry(), 30)
        index = next(k for k in client.scan_iter(f"{prefix}:*:i"))
        assert client.zcard(index) == 2  # the last answer and its Vary names
    finally:
        store.invalidate("/many")
        client.close()


def test_a_lookup_right_after_a_siblings_drop_never_sees_the_old_answer(
    tmp_path: Path,
) -> None:
    """With real threads (the threaded worker), the listener may be dropping the path
    when a lookup drains the queue: the lookup waits for it."""
    store = MemoryStore(1 << 20)
    peers = _peers(str(tmp_path), 104, store)
    store.peers = peers
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale = 0
    try:
        for n in range(2000):
            path = f"/race/{n}"
            store.put(path, "k", "v", entry(), 30)
            sender.sendto(path.encode(), peers.address)
            if store.get(path, "k", lambda _: "v") is not None:
                stale += 1
    finally:
        sender.close()
        peers.close()
    assert stale == 0
