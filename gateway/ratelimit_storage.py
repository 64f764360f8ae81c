"""The rate-limit storage: a `limits` storage whose every Redis wait is bounded.

Left to their defaults, `limits` and redis-py wait seconds on a storage that stops
answering (5 s timeouts, retries with backoff, topology reads outside any deadline),
and every request that checks a limit waits with them, holding its worker. The
storage built here is the one gateway.ratelimit counts on.

A storage that fails costs a check at most twice `storage_timeout_ms`, whatever the
backend does about it. Each wait (connect, send, read) has `storage_timeout_ms`, and
one that times out ends the check: what did not answer in time is not asked again
within the check. After the first failed wait (a timeout, a refused or broken
connection), whatever the check still tries (the next Sentinel, a cluster topology
refresh, the one retry on the node that took a lost node's slots over) shares one
more `storage_timeout_ms`. The bound lives in the connections' sockets, so it holds
the same on threads and on gevent's cooperative sockets, with no timer thread or
signal. A check that meets no failure keeps a whole timeout for each wait, as a burst
of new connections on a busy worker needs.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import limits.storage
import redis
import redis.connection
import redis.exceptions
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway.config.model import RateLimitSettings


class StorageTimeout(redis.exceptions.TimeoutError):
    """A wait of a storage check timed out, or the check ran out of time.

    Not redis-py's TimeoutError itself: the cluster client retries errors of exactly
    its listed types, and a check does not ask again what did not answer in time.
    """


class StorageCheck:
    """The storage check in progress on a thread or greenlet (see the module's doc)."""

    __slots__ = ("budget", "deadline")

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.deadline: float | None = None  # set by the first failed wait

    def failed(self) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.budget

    def time_left(self) -> float | None:
        """None before any failure; raises StorageTimeout once the time is up."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise StorageTimeout("the rate-limit storage check ran out of time")
        return left


# Whoever asks the storage sets it around each check, since only the caller knows
# where one check ends. None outside a check: the cluster's first topology read at
# start-up has the socket timeouts alone.
CURRENT_CHECK: contextvars.ContextVar[StorageCheck | None] = contextvars.ContextVar(
    "rate_limit_storage_check", default=None
)


def _shorter(timeout: float | None, left: float | None) -> float | None:
    if left is None:
        return timeout
    return left if timeout is None else min(timeout, left)


def _failure(check: StorageCheck | None, exc: redis.exceptions.RedisError) -> Exception:
    """What a connection raises for `exc`, a failed wait of `check`."""
    if check is None:
        return exc
    check.failed()
    if isinstance(exc, redis.exceptions.TimeoutError) and not isinstance(exc, StorageTimeout):
        return StorageTimeout(str(exc))
    return exc


_FAILED_WAITS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class _Bounded(redis.connection.AbstractConnection):
    """A connection that keeps to the storage check it serves: a timed-out wait
    raises StorageTimeout, and after a failed wait every further wait of the check
    ends by its deadline."""

    def _connect(self) -> Any:
        check = CURRENT_CHECK.get()
        left = check.time_left() if check is not None else None
        saved = self.socket_connect_timeout, self.socket_timeout
        self.socket_connect_timeout = _shorter(saved[0], left)
        self.socket_timeout = _shorter(saved[1], left)
        try:
            return super()._connect()  # type: ignore[safe-super, no-untyped-call]
        except OSError as exc:  # before redis-py words it
            if check is None:
                raise
            check.failed()
            if not isinstance(exc, TimeoutError):
                raise
            where = self._host_error()  # type: ignore[no-untyped-call]
            raise StorageTimeout(f"Timeout connecting to {where}") from None
        finally:
            self.socket_connect_timeout, self.socket_timeout = saved

    def _bound_socket(self, check: StorageCheck | None) -> None:
        left = check.time_left() if check is not None else None
        if self._sock is not None:  # also undoes the bound of an earlier check
            self._sock.settimeout(_shorter(self.socket_timeout, left))

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        check = CURRENT_CHECK.get()
        self._bound_socket(check)
        try:
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]
        except _FAILED_WAITS as exc:
            error = _failure(check, exc)
            if error is exc:
                raise
            raise error from None

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        check = CURRENT_CHECK.get()
        try:
            self._bound_socket(check)
        except StorageTimeout:
            # The reply still due must not answer the next command.
            self.disconnect()  # type: ignore[no-untyped-call]
            raise
        try:
            return super().read_response(*args, **kwargs)
        except _FAILED_WAITS as exc:
            error = _failure(check, exc)
            if error is exc:
                raise
            raise error from None
        except redis.exceptions.TryAgainError:
            # redis-py resends a multi-key command on TRYAGAIN up to 16 times, with
            # pauses: the check's deadline ends that.
            if check is not None:
                check.failed()
            raise


class _BoundedConnection(_Bounded, redis.connection.Connection):
    pass


class _BoundedSSLConnection(_Bounded, redis.connection.SSLConnection):
    pass


class _BoundedUnixConnection(_Bounded, redis.connection.UnixDomainSocketConnection):
    pass


class _BoundedSentinelConnection(_Bounded, redis.sentinel.SentinelManagedConnection):
    pass


class ClusterDown(redis.exceptions.ResponseError):
    """A cluster node answered CLUSTERDOWN."""


class _BoundedClusterConnection(_BoundedConnection):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except redis.exceptions.ClusterDownError as exc:
            # redis-py answers CLUSTERDOWN with a quarter-second sleep and a topology
            # read of its own, outside any deadline. A cluster that is down has no
            # better answer a moment later: the check fails now, and a lost node's
            # connection error (not this) is what asks for the new topology.
            raise ClusterDown(str(exc)) from None


_CONNECTIONS: dict[str, Callable[..., redis.connection.AbstractConnection]] = {
    "redis": _BoundedConnection,
    "rediss": _BoundedSSLConnection,
    "redis+unix": _BoundedUnixConnection,
}


def make_storage(settings: RateLimitSettings) -> limits.storage.Storage:
    """The storage for `settings.storage`; on Redis, its connections keep to the
    deadline of the check they serve (storage_timeout_ms)."""
    uri = settings.storage
    scheme = urlsplit(uri).scheme
    if scheme == "memory":
        return _sync(limits.storage.storage_from_string(uri))
    timeout = settings.storage_timeout_ms / 1000
    sockets = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if scheme in _CONNECTIONS:
        # Our own pool: redis-py's 5 s default timeout and its retries would let a
        # frozen Redis hold every worker thread for seconds.
        pool = redis.ConnectionPool.from_url(
            uri.replace("redis+unix://", "unix://"),
            connection_class=_CONNECTIONS[scheme],
            retry_on_timeout=False,
            retry=None,
            **sockets,
        )
        return limits.storage.RedisStorage(uri, connection_pool=pool, wrap_exceptions=True)
    options: dict[str, Any] = {"wrap_exceptions": True, **sockets}
    if scheme == "redis+cluster":
        options.update(
            connection_class=_BoundedClusterConnection,
            # redis-py's default is ten retries with backoff of up to a second each:
            # seconds per check while a node is gone. One retry, at once, is enough
            # to run the topology refresh a lost node asked for and to resend to the
            # node that took its slots over; both within the check's deadline.
            retry=Retry(NoBackoff(), 1),
        )
    elif scheme == "redis+sentinel":
        # The primary's address is asked for on every new connection, of one Sentinel
        # after the other until one answers. Without timeouts of their own, the
        # connections to the Sentinels would wait 5 s each.
        options.update(connection_class=_BoundedSentinelConnection, sentinel_kwargs=sockets)
    storage = _sync(limits.storage.storage_from_string(uri, **options))
    if isinstance(storage, limits.storage.RedisClusterStorage):
        _one_refresh_at_a_time(storage.storage.nodes_manager)
    elif isinstance(storage, limits.storage.RedisSentinelStorage):
        # redis-py builds the Sentinels' clients with no say in their connection class;
        # they have made no connection yet.
        for sentinel in storage.sentinel.sentinels:
            sentinel.connection_pool.connection_class = _BoundedConnection
    return storage


def _one_refresh_at_a_time(nodes: Any) -> None:
    """Makes a cluster client's topology refresh skip, rather than wait for, one that
    is already running, and count as a failure of the check that runs it.

    redis-py runs a requested refresh in whichever command comes next once it is due,
    and while one command runs it, another can take the next request: it would wait
    for the first (a lock no socket timeout bounds) and then read the topology again,
    so a whole cluster that stops answering stacked the refreshes of every thread.
    A command that finds a refresh running goes on with the topology it has. A refresh
    only runs because something failed, so from its start the check running it has
    one more storage_timeout_ms in all, as after any failed wait.
    """
    initialize = nodes.initialize
    running = threading.Lock()  # only ever tried, never waited for

    def initialize_unless_running(*args: Any, **kwargs: Any) -> None:
        if not running.acquire(blocking=False):
            return
        try:
            check = CURRENT_CHECK.get()
            if check is not None:
                check.failed()
            initialize(*args, **kwargs)
        finally:
            running.release()

    nodes.initialize = initialize_unless_running


def _sync(storage: object) -> limits.storage.Storage:
    if not isinstance(storage, limits.storage.Storage):  # only async:// URIs give others
        raise ValueError("an async rate-limit storage cannot serve the gateway")
    return storage
