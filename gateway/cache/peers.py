"""The other workers of this gateway, told which paths' kept answers to drop.

With `cache.storage: memory://` each worker keeps its own answers. A write served by
one worker must still drop the path's answers in all of them, or a client could read
its own change and then, from another worker, the answer from before it. Each worker
listens on a Unix datagram socket in a folder the gunicorn master made for this
purpose (GATEWAY_CACHE_PEERS_DIR, see serving.py) and, after dropping a path itself,
sends the path to every other socket there. A datagram is queued at the sibling
before the writing client has even read its answer, and the sibling reads its queue
before every lookup (a listener also empties it in the background), so a read that
follows the write's answer never gets the answer from before it. A datagram that
cannot be queued at once (the queue is full) is dropped, and that worker's answers
expire by their ttl.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import os
import select
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("gateway.cache")

PEERS_DIR_ENV = "GATEWAY_CACHE_PEERS_DIR"
_PREFIX = "cache-"
_SUFFIX = ".sock"
_MAX_PATH_BYTES = 16_384
_SEND_TIMEOUT = 0.05


def socket_name(pid: int) -> str:
    return f"{_PREFIX}{pid}{_SUFFIX}"


class Peers:
    """This worker's socket in `folder`, a listener that drops what others name, and
    `tell` to name a path to every other worker."""

    def __init__(self, folder: str, drop: Callable[[str], object]) -> None:
        self.folder = folder
        self.name = socket_name(os.getpid())
        self.address = os.path.join(folder, self.name)
        self._drop = drop
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address)  # a reused pid's leftover
        self._socket.bind(self.address)
        # The same socket as the standard library's own object, never the event
        # loop's: `drain` must read what is queued without ever waiting.
        self._queued = _socket.socket(
            _socket.AF_UNIX, _socket.SOCK_DGRAM, 0, os.dup(self._socket.fileno())
        )
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.settimeout(_SEND_TIMEOUT)
        self._closed = False
        self._draining = threading.Lock()
        threading.Thread(target=self._listen, name="cache-peers", daemon=True).start()

    def _listen(self) -> None:
        """Waits for the queue to have something, then drains it: the drops happen
        under `drain`'s lock, so a lookup draining at the same moment waits for a drop
        in progress instead of finding the queue empty before it is done."""
        while not self._closed:
            try:
                select.select([self._socket], [], [])
            except (OSError, ValueError):
                return  # closed
            try:
                self.drain()
            except Exception:  # a failed drop must not end the listener
                log.exception("dropping a path a peer named failed")

    def drain(self) -> None:
        """Drops now every path already queued: a sibling tells before it answers the
        write, so a read that comes after the write's answer sees the drop."""
        with self._draining:
            while True:
                try:
                    data = self._queued.recv(_MAX_PATH_BYTES + 1, _socket.MSG_DONTWAIT)
                except OSError:  # nothing queued (BlockingIOError), or closed
                    return
                self._drop(data.decode("utf-8", "surrogateescape"))

    def tell(self, path: str) -> int:
        """Names `path` to every other worker; how many were told."""
        data = path.encode("utf-8", "surrogateescape")
        if len(data) > _MAX_PATH_BYTES:
            return 0
        told = 0
        try:
            names = os.listdir(self.folder)
        except OSError as exc:
            log.warning("the sibling workers were not told to drop %r: %s", path[:200], exc)
            return 0
        for name in names:
            if name == self.name or not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
                continue
            try:
                self._sender.sendto(data, os.path.join(self.folder, name))
                told += 1
            except (ConnectionRefusedError, FileNotFoundError):
                # A worker that is gone: the master removes its socket on exit; this is
                # the one left by a worker killed before it could be.
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.folder, name))
            except OSError as exc:  # its queue is full, or it is too slow: by ttl
                log.warning("a peer was not told to drop %r: %s", path[:200], exc)
        return told

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._socket.close()
        with contextlib.suppress(OSError):
            self._sender.close()
        with contextlib.suppress(OSError):
            self._queued.close()
        with contextlib.suppress(OSError):
            os.unlink(self.address)


def peers_folder() -> str | None:
    """The folder the master made for the workers' sockets; None outside gunicorn."""
    folder = os.environ.get(PEERS_DIR_ENV)
    if not folder:
        return None
    if not os.path.isdir(folder):
        log.warning(
            "%s names %r, which is not a folder: writes served by this worker drop "
            "kept answers here only, and its siblings' writes are not heard",
            PEERS_DIR_ENV,
            folder,
        )
        return None
    return folder


def forget_worker(pid: int) -> None:
    """child_exit (master): a dead worker's socket goes."""
    folder = peers_folder()
    if folder is not None:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, socket_name(pid)))
