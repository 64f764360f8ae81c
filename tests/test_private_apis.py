"""The libraries' private parts the gateway leans on, checked by name.

pyproject.toml bounds each of these libraries to the release series these were read
in; when `make lock` moves to a new series, this file says first and plainly what
moved, before the behaviour tests fail in stranger ways."""

from __future__ import annotations

import inspect

import flask_cors.core
import gunicorn.http.body
import gunicorn.http.parser
import gunicorn.http.wsgi
import gunicorn.workers.base_async
import gunicorn.workers.ggevent
import httpx
import limits.storage
import redis.cluster
import redis.sentinel


def test_flask_cors_header_engine() -> None:
    """gateway/cors.py computes CORS headers with flask-cors' own engine."""
    assert callable(flask_cors.core.get_cors_headers)
    assert callable(flask_cors.core.serialize_options)


def test_httpx_transport_pool_backend() -> None:
    """gateway/deadline.py swaps the network backend of an httpx transport's pool."""
    transport = httpx.HTTPTransport()
    try:
        assert hasattr(transport._pool, "_network_backend")
    finally:
        transport.close()


def test_limits_sliding_window_keys() -> None:
    """gateway/ratelimit_scripts.py reads the sliding-window counter's own keys."""
    for name in ("_previous_window_key", "_current_window_key", "prefixed_key"):
        assert hasattr(limits.storage.RedisStorage, name), name


def test_redis_cluster_and_sentinel_internals() -> None:
    """gateway/ratelimit_storage.py wraps the cluster client's topology refresh and sets
    the Sentinels' connection class."""
    assert hasattr(redis.cluster.NodesManager, "initialize")
    assert "connection_pool" in inspect.signature(redis.Redis.__init__).parameters
    sentinel = redis.sentinel.Sentinel([("127.0.0.1", 1)])
    assert all(hasattr(s, "connection_pool") for s in sentinel.sentinels)


def test_gunicorn_pieces_the_event_loop_worker_uses() -> None:
    """gateway/workers.py runs gunicorn's HTTP/1 parser and request handling in a loop
    of its own."""
    assert "deadline" in inspect.signature(gunicorn.http.parser.Parser.finish_body).parameters
    assert hasattr(gunicorn.http.body.LengthReader(None, 0), "length")
    assert "failed" in gunicorn.http.body.Body(None).__dict__
    assert callable(gunicorn.http.wsgi.Response.force_close)
    assert callable(gunicorn.workers.base_async.AsyncWorker.handle_request)
    assert callable(gunicorn.workers.ggevent.GeventWorker.notify)
