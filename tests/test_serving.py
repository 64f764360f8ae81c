"""gunicorn settings: the collector hooks that keep a large route table out of the
collector's way."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.serving import (
    HARDENED_SETTINGS,
    freeze_before_fork,
    freeze_the_app,
    gunicorn_options,
    pause_gc_while_booting,
)


@pytest.fixture
def collector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


def test_every_gunicorn_process_gets_the_collector_hooks() -> None:
    options = gunicorn_options("127.0.0.1", 8080, 2, 8)
    assert options["pre_fork"] is freeze_before_fork
    assert options["post_fork"] is pause_gc_while_booting
    assert options["post_worker_init"] is freeze_the_app
    assert HARDENED_SETTINGS["post_worker_init"] is freeze_the_app


def test_master_freezes_what_it_holds_before_forking(collector: None) -> None:
    held = [object() for _ in range(3)]
    freeze_before_fork(None, None)
    assert gc.get_freeze_count() >= len(held)


def test_a_worker_collects_nothing_while_booting_then_freezes_its_app(
    collector: None,
) -> None:
    pause_gc_while_booting(None, None)
    assert not gc.isenabled()
    app = {"routes": [[i] for i in range(1000)]}
    freeze_the_app(None)
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(app["routes"])
    # A full collection no longer walks the frozen app.
    assert all(obj is not app for obj in gc.get_objects())


def test_gateway_serve_runs_the_event_loop_worker_sized_by_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_WORKER_CLASS", raising=False)
    options = gunicorn_options("127.0.0.1", 8080, 2, 8, worker_connections=250)
    assert options["worker_class"] == "gateway.workers.GatewayWorker"
    assert options["worker_connections"] == 250
    assert gunicorn_options("127.0.0.1", 8080, 2, 8)["worker_connections"] == 1000


def test_gateway_serve_takes_the_worker_class_from_the_environment_as_gunicorn_conf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GATEWAY_WORKER_CLASS", "gateway.workers.GatewayThreadWorker")
    options = gunicorn_options("127.0.0.1", 8080, 2, 8)
    assert options["worker_class"] == "gateway.workers.GatewayThreadWorker"


def test_a_worker_closes_its_app_when_it_exits() -> None:
    closed: list[bool] = []

    class App:
        gateway = type("G", (), {"close": lambda self: closed.append(True)})()

    worker = type("W", (), {"wsgi": type("E", (), {"app": App()})()})()
    HARDENED_SETTINGS["worker_exit"](None, worker)
    assert closed == [True]
    HARDENED_SETTINGS["worker_exit"](None, object())  # a worker with no app: nothing
