"""Running the gateway under gunicorn: its settings, its worker, `gateway serve`.

The same settings serve `gateway serve` and `gunicorn -c gunicorn.conf.py
"gateway:create_app()"`, so the two ways to run it behave alike.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from gateway.cache.peers import PEERS_DIR_ENV, forget_worker
from gateway.config import Config
from gateway.metrics import mark_worker_dead
from gateway.reload import (
    Accepted,
    ConfigKeeper,
    config_digest,
    keep,
    keep_config,
    reload_config,
    watch_config,
)


def prepare_metrics_dir(server: Any) -> None:
    """on_starting (master, before any worker): a clean PROMETHEUS_MULTIPROC_DIR.

    Workers inherit it and write their samples there; stale files from an earlier
    run would be counted again, so a given folder is emptied and, without one, a
    fresh one is made (and removed at exit).
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.unlink(os.path.join(directory, name))
    else:
        directory = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        os.environ["GATEWAY_OWNS_METRICS_DIR"] = directory


def prepare_peers_dir(server: Any) -> None:
    """on_starting (master): the folder where each worker's cache listens for the
    paths its siblings drop (gateway/cache/peers.py); one per master, removed at exit."""
    # A Unix socket's path has at most 107 bytes: a long TMPDIR (a test runner's, a
    # container's) leaves too little for the names in it.
    parent = tempfile.gettempdir()
    if len(parent) > 60 and os.path.isdir("/tmp"):
        parent = "/tmp"
    os.environ[PEERS_DIR_ENV] = tempfile.mkdtemp(prefix="gateway-peers-", dir=parent)


def worker_exited(server: Any, worker: Any) -> None:
    """child_exit (master): a dead worker's live gauges stop counting, and its cache
    socket goes."""
    mark_worker_dead(worker.pid)
    forget_worker(worker.pid)


def close_the_app(server: Any, worker: Any) -> None:
    """worker_exit (worker, after it stopped serving): the app's pools, storages and
    tracer closed, the spans still queued sent first (the SDK's own exit handler would
    send them too, but only once the interpreter exits)."""
    app = getattr(getattr(worker, "wsgi", None), "app", None)
    gateway = getattr(app, "gateway", None)
    close = getattr(gateway, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # exiting anyway: say so, never hang the exit on it
            server.log.exception("closing the app at worker exit failed")


def remove_master_dirs(server: Any) -> None:
    """on_exit (master): remove the folders prepare_metrics_dir and
    prepare_peers_dir made."""
    directory = os.environ.get("GATEWAY_OWNS_METRICS_DIR")
    if directory and directory == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(directory, ignore_errors=True)
    peers = os.environ.get(PEERS_DIR_ENV)
    if peers:
        shutil.rmtree(peers, ignore_errors=True)


def freeze_before_fork(server: Any, worker: Any) -> None:
    """pre_fork (master): what the master holds, the parsed configuration above all,
    leaves the collector's generations. A worker's collections then never write to
    those objects, so their pages stay shared with the master instead of being copied
    into every worker."""
    gc.freeze()


def pause_gc_while_booting(server: Any, worker: Any) -> None:
    """post_fork (worker): building the app allocates several objects per route and
    frees almost none; collections in the middle would only walk them again and again
    (about a second of a 10,000-route worker's start-up)."""
    gc.disable()


def freeze_the_app(worker: Any) -> None:
    """post_worker_init (worker, app built): the app lives as long as the worker. Out
    of the collector's generations, a full collection no longer walks the route table:
    with 10,000 routes that walk took about a second, during which the worker served
    nothing."""
    gc.freeze()
    gc.enable()


def start_master(server: Any) -> None:
    """on_starting (master): the metrics and cache-peers folders, then the
    configuration, checked once for every worker to come (gateway/reload.py)."""
    prepare_metrics_dir(server)
    prepare_peers_dir(server)
    keep_config(server)


# Settings every gateway process needs, whatever the deployment.
HARDENED_SETTINGS: dict[str, Any] = {
    # Metrics across workers (see gateway/metrics.py) and the configuration the master
    # checked, kept across reloads (kill -HUP; see gateway/reload.py).
    "on_starting": start_master,
    "on_reload": reload_config,
    "child_exit": worker_exited,
    "worker_exit": close_the_app,
    "on_exit": remove_master_dirs,
    # The collector and a large route table (see the hooks' docstrings).
    "pre_fork": freeze_before_fork,
    "post_fork": pause_gc_while_booting,
    "post_worker_init": freeze_the_app,
    # An event-loop worker: a slow client waits on a greenlet, not on a thread
    # (gateway/workers.py; the measurements are in docs/perf/README.md).
    "worker_class": "gateway.workers.GatewayWorker",
    "worker_connections": 1000,
    # The gateway decides which proxies to believe (gateway.trusted_proxies); gunicorn
    # must not turn a client's X-Forwarded-Proto or SCRIPT_NAME header into the
    # request's scheme or path on its own.
    "forwarded_allow_ips": "",
    # Headers with "_" are dropped: X_User_Id must not slip past the identity header
    # filter as a twin of X-User-Id.
    "header_map": "drop",
    # Room for an 8 KiB bearer token plus its "Authorization: Bearer " prefix, so an
    # oversized token meets the gateway's own 401 rather than gunicorn's 431.
    "limit_request_field_size": 16384,
    "accesslog": None,  # the gateway writes its own JSON access log
    # A worker stuck longer than this is replaced; upstream deadlines end well before.
    "timeout": 60,
    "graceful_timeout": 30,
    "keepalive": 5,
    "proc_name": "gateway",
}


def gunicorn_options(
    host: str,
    port: int,
    workers: int,
    threads: int,
    worker_connections: int = 1000,
    *,
    watch: bool = False,
) -> dict[str, Any]:
    return {
        **HARDENED_SETTINGS,
        # As in gunicorn.conf.py: the threaded worker, for a gateway behind a proxy that
        # buffers whole requests (and for measuring what the event loop costs).
        "worker_class": os.environ.get("GATEWAY_WORKER_CLASS", HARDENED_SETTINGS["worker_class"]),
        **({"when_ready": watch_config} if watch else {}),
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_connections": worker_connections,
        "errorlog": "-",
        "loglevel": "info",
    }


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with our options; each worker builds its own app from the Config."""

    def __init__(self, path: str, config: Config, options: dict[str, Any]) -> None:
        # Checked already by `gateway serve`: the master keeps it for every worker.
        keep(ConfigKeeper(Accepted(path, config, config_digest(config))))
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 25.1 opens a control socket at one fixed path per user, which
            # two gateways on one host would fight over; nothing here uses it.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        from gateway.app import create_app

        return create_app()  # in a worker: what the master accepted
