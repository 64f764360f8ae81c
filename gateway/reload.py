"""Reloading the configuration without a restart: the master process keeps the table.

On SIGHUP gunicorn replaces its workers gracefully: new workers start while the old
ones finish what they serve and exit, on the same listening sockets, so no request is
refused. The master reads and checks the configuration first, when it starts and on
every reload, and a worker builds its app from what the master accepted, inherited
through fork. A file that fails the check changes nothing: every problem is logged as
FILE:LINE:COL, the new workers get the table already in service, and
`gateway_config_reloads_total{result="rejected"}` counts it. gunicorn alone would
have booted workers on the broken file and, when they all failed, stopped.

The same hooks serve `gateway serve` and `gunicorn -c gunicorn.conf.py`.
`gateway serve --watch` sends the master SIGHUP when a file of the accepted
configuration changes (for development).
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config, ConfigError, load_config, resolve_config_path
from gateway.metrics import count_config_reload

WATCH_INTERVAL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Accepted:
    """A configuration that passed every check, and the digest that names it."""

    path: str
    config: Config
    digest: str  # sha256 hex of its files (gateway_config_info shows the first 12)


def config_files(config: Config) -> tuple[str, ...]:
    return config.files or (config.source,)


def config_digest(config: Config) -> str:
    """sha256 of the file for a one-file configuration (what `sha256sum` prints), else
    of the `sha256sum` lines of its files in the order they were read."""
    files = config_files(config)
    sums = [hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files]
    if len(files) == 1:
        return sums[0]
    lines = "".join(f"{digest}  {name}\n" for digest, name in zip(sums, files, strict=True))
    return hashlib.sha256(lines.encode()).hexdigest()


class ConfigKeeper:
    """Holds the accepted configuration in the master."""

    def __init__(self, accepted: Accepted) -> None:
        self.accepted = accepted

    @classmethod
    def load(cls, path: str) -> ConfigKeeper:
        """The keeper of the file at `path`; raises ConfigError for an invalid one."""
        config = load_config(path)
        return cls(Accepted(path, config, config_digest(config)))

    def reload(self, log: Any) -> bool:
        """Check the file again and keep it when it is valid; True when it was."""
        path = self.accepted.path
        try:
            config = load_config(path)
            digest = config_digest(config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("config reload rejected: %s", problem)
            log.error(
                "config reload rejected: %d problem(s) in %s; still serving %s",
                len(exc.problems),
                path,
                self.accepted.digest[:12],
            )
            count_config_reload("rejected")
            return False
        except OSError as exc:  # the file went away between the check and the read
            log.error(
                "config reload rejected: %s; still serving %s", exc, self.accepted.digest[:12]
            )
            count_config_reload("rejected")
            return False
        self.accepted = Accepted(path, config, digest)
        log.info("config reloaded: %s, %s", digest[:12], config.summary())
        count_config_reload("applied")
        return True


# Set in the master before any worker forks; each worker inherits it.
_keeper: ConfigKeeper | None = None


def keep(keeper: ConfigKeeper) -> None:
    global _keeper
    _keeper = keeper


def accepted() -> Accepted | None:
    """What the master accepted, in a worker it forked (None anywhere else)."""
    return _keeper.accepted if _keeper is not None else None


def keep_config(server: Any) -> None:
    """on_starting (master): read and check the configuration once, before any worker
    starts. `gateway serve` has done so already; plain gunicorn finds the file as
    create_app would ($GATEWAY_CONFIG, else ./routes.yaml)."""
    if _keeper is not None:
        return
    path = str(resolve_config_path(None))
    try:
        keep(ConfigKeeper.load(path))
    except ConfigError as exc:
        for problem in exc.problems:
            server.log.error("%s", problem)
        raise SystemExit(f"{path}: {len(exc.problems)} problem(s); not starting") from None


def reload_config(server: Any) -> None:
    """on_reload (master, SIGHUP, before the new workers fork)."""
    if _keeper is None:  # pragma: no cover - keep_config runs first
        return
    _keeper.reload(server.log)


def watch_config(server: Any) -> None:
    """when_ready (master) with `gateway serve --watch`: SIGHUP on a changed file."""
    thread = threading.Thread(target=_watch, args=(server,), name="config-watch", daemon=True)
    thread.start()


def _stamps(files: tuple[str, ...]) -> dict[str, tuple[int, int] | None]:
    stamps: dict[str, tuple[int, int] | None] = {}
    for name in files:
        try:
            info = os.stat(name)
            stamps[name] = (info.st_mtime_ns, info.st_size)
        except OSError:
            stamps[name] = None
    return stamps


def _watch(server: Any) -> None:
    seen_digest = ""
    seen: dict[str, tuple[int, int] | None] = {}
    while True:
        current = accepted()
        if current is None:
            return
        if current.digest != seen_digest:  # watch the files of what is in service
            seen_digest = current.digest
            files = config_files(current.config)
            # Their folders too: a team's new file in an included folder changes it.
            folders = tuple(sorted({os.path.dirname(os.path.abspath(f)) for f in files}))
            seen = _stamps(files + folders)
        time.sleep(WATCH_INTERVAL_SECONDS)
        now = _stamps(tuple(seen))
        if now != seen:
            seen = now
            server.log.info("config watch: a file changed; reloading")
            os.kill(os.getpid(), signal.SIGHUP)
