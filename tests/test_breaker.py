"""The circuit breaker: closed, open, half-open with one probe; and how forwarding uses it.

The state machine is driven by a fake clock. The forwarding tests run the whole app
in-process with the upstream mocked by respx: failures are connection errors and
timeouts (5xx answers only with `on_5xx`), an open breaker answers 503 with
Retry-After without calling the upstream, and /readyz reports every breaker.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpcore
import httpx
import pytest
import respx
from flask import Flask
from flask.testing import FlaskClient

from gateway.breaker import BreakerOpen, CircuitBreaker, State
from tests.app_support import AppFactory, ClientFactory


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[State]:
    return []


def breaker(
    clock: FakeClock, changes: list[State], failures: int = 3, open_seconds: float = 10.0
) -> CircuitBreaker:
    return CircuitBreaker(failures, open_seconds, clock=clock, on_change=changes.append)


def open_breaker(clock: FakeClock, changes: list[State], **kwargs: Any) -> CircuitBreaker:
    b = breaker(clock, changes, **kwargs)
    for _ in range(b.threshold):
        b.before_call()
        b.failed()
    assert b.state == "open"
    return b


# --- the state machine ------------------------------------------------------------------


def test_a_new_breaker_is_closed_and_lets_calls_through(
    clock: FakeClock, changes: list[State]
) -> None:
    b = breaker(clock, changes)
    assert b.state == "closed"
    for _ in range(10):
        b.before_call()
        b.succeeded()
    assert b.state == "closed"
    assert changes == []


def test_it_opens_after_the_configured_failures_in_a_row(
    clock: FakeClock, changes: list[State]
) -> None:
    b = breaker(clock, changes, failures=3)
    b.failed()
    b.failed()
    assert b.state == "closed"
    b.before_call()  # still allowed below the threshold
    b.failed()
    assert b.state == "open"
    assert changes == ["open"]
    with pytest.raises(BreakerOpen):
        b.before_call()


def test_a_success_resets_the_run_of_failures(clock: FakeClock, changes: list[State]) -> None:
    b = breaker(clock, changes, failures=3)
    for _ in range(5):
        b.failed()
        b.failed()
        b.succeeded()
    assert b.state == "closed"
    assert changes == []
    b.before_call()


def test_failures_zero_means_no_breaker(clock: FakeClock, changes: list[State]) -> None:
    b = breaker(clock, changes, failures=0)
    for _ in range(100):
        b.before_call()
        b.failed()
    assert b.state == "closed"
    assert changes == []


def test_failures_one_opens_on_the_first_failure(clock: FakeClock, changes: list[State]) -> None:
    b = breaker(clock, changes, failures=1)
    b.before_call()
    b.failed()
    assert b.state == "open"


@pytest.mark.parametrize(
    ("open_seconds", "waited", "retry_after"),
    [(10.0, 0.0, 10), (10.0, 2.5, 8), (10.0, 9.9, 1), (1.0, 0.0, 1), (0.2, 0.1, 1), (30, 0.5, 30)],
)
def test_while_open_calls_are_refused_with_the_seconds_left_rounded_up(
    clock: FakeClock, changes: list[State], open_seconds: float, waited: float, retry_after: int
) -> None:
    b = open_breaker(clock, changes, open_seconds=open_seconds)
    clock.advance(waited)
    with pytest.raises(BreakerOpen) as caught:
        b.before_call()
    assert caught.value.retry_after == retry_after
    assert caught.value.retry_after >= 1


def test_after_open_seconds_it_is_half_open_and_lets_exactly_one_probe_through(
    clock: FakeClock, changes: list[State]
) -> None:
    b = open_breaker(clock, changes, open_seconds=10.0)
    clock.advance(9.999)
    assert b.state == "open"
    with pytest.raises(BreakerOpen):
        b.before_call()
    clock.advance(0.001)
    assert b.state == "half_open"
    b.before_call()  # the probe
    for _ in range(3):  # everyone else waits for the probe's outcome
        with pytest.raises(BreakerOpen) as caught:
            b.before_call()
        assert caught.value.retry_after >= 1
    assert b.state == "half_open"


def test_a_successful_probe_closes_the_breaker(clock: FakeClock, changes: list[State]) -> None:
    b = open_breaker(clock, changes, open_seconds=5.0)
    clock.advance(5.0)
    b.before_call()
    b.succeeded()
    assert b.state == "closed"
    assert changes == ["open", "closed"]
    for _ in range(5):
        b.before_call()
    # The run of failures starts again from zero.
    b.failed()
    b.failed()
    assert b.state == "closed"
    b.failed()
    assert b.state == "open"
    assert changes == ["open", "closed", "open"]


def test_a_failed_probe_opens_it_again_for_a_full_period(
    clock: FakeClock, changes: list[State]
) -> None:
    b = open_breaker(clock, changes, open_seconds=5.0)
    clock.advance(7.0)
    b.before_call()
    clock.advance(0.5)  # the probe took a while to fail
    b.failed()
    assert b.state == "open"
    # Still one "open" notification: a worker's gauge stays at 1 throughout.
    assert changes == ["open"]
    with pytest.raises(BreakerOpen) as caught:
        b.before_call()
    assert caught.value.retry_after == 5
    clock.advance(4.9)
    with pytest.raises(BreakerOpen):
        b.before_call()
    clock.advance(0.1)
    b.before_call()  # the next probe
    b.succeeded()
    assert b.state == "closed"
    assert changes == ["open", "closed"]


def test_only_one_of_many_concurrent_callers_gets_the_probe(
    clock: FakeClock, changes: list[State]
) -> None:
    b = open_breaker(clock, changes, open_seconds=1.0)
    clock.advance(1.0)
    allowed: list[int] = []
    refused: list[int] = []
    start = threading.Barrier(16)

    def call(index: int) -> None:
        start.wait(timeout=5)
        try:
            b.before_call()
        except BreakerOpen:
            refused.append(index)
        else:
            allowed.append(index)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    assert len(allowed) == 1
    assert len(refused) == 15


def test_the_change_callback_fires_only_between_closed_and_not_closed(
    clock: FakeClock, changes: list[State]
) -> None:
    b = open_breaker(clock, changes, open_seconds=1.0)
    for _ in range(3):  # probe, fail, wait: open -> half_open -> open, no callback
        clock.advance(1.0)
        b.before_call()
        b.failed()
    assert changes == ["open"]
    clock.advance(1.0)
    b.before_call()
    b.succeeded()
    b.succeeded()
    assert changes == ["open", "closed"]


def test_an_abandoned_probe_frees_the_slot_and_leaves_it_half_open(
    clock: FakeClock, changes: list[State]
) -> None:
    b = open_breaker(clock, changes, open_seconds=1.0)
    clock.advance(1.0)
    b.before_call()
    with pytest.raises(BreakerOpen):
        b.before_call()
    b.abandoned()  # the probe told nothing about the upstream
    assert b.state == "half_open"
    assert changes == ["open"]
    b.before_call()  # another request may probe now
    with pytest.raises(BreakerOpen):
        b.before_call()
    b.succeeded()
    assert b.state == "closed"


def test_an_abandoned_call_neither_resets_nor_extends_the_run_of_failures(
    clock: FakeClock, changes: list[State]
) -> None:
    b = breaker(clock, changes, failures=3)
    b.failed()
    b.failed()
    b.abandoned()
    assert b.state == "closed"
    b.failed()
    assert b.state == "open"
    assert changes == ["open"]


def test_abandoned_is_a_no_op_without_a_breaker(clock: FakeClock, changes: list[State]) -> None:
    b = breaker(clock, changes, failures=0)
    b.abandoned()
    b.before_call()
    assert b.state == "closed"


# --- forwarding through the breaker -------------------------------------------------------

UPSTREAM = "http://flaky.internal:8090"
OTHER = "http://steady.internal:8091"


def config_text(on_5xx: bool = False, open_seconds: float = 0.3) -> str:
    return f"""\
version: 1
upstreams:
  flaky:
    url: {UPSTREAM}
    connect_timeout: 0.5
    timeout: 1.0
    retries: 0
    breaker: {{failures: 3, open_seconds: {open_seconds}, on_5xx: {str(on_5xx).lower()}}}
  steady:
    url: {OTHER}
    retries: 0
routes:
  - name: flaky.get
    path: /flaky/{{rest:path}}
    methods: [GET, POST]
    upstream: flaky
    upstream_path: /{{rest:path}}
    auth: public
  - name: steady.get
    path: /steady/{{rest:path}}
    methods: [GET]
    upstream: steady
    upstream_path: /{{rest:path}}
    auth: public
"""


@pytest.fixture
def app(gateway_app: AppFactory) -> Flask:
    return gateway_app(config_text())


@pytest.fixture
def upstream(upstream: respx.MockRouter) -> respx.MockRouter:
    upstream.route(host="steady.internal").mock(return_value=httpx.Response(200, json={}))
    return upstream


def problem_code(response: Any) -> str:
    assert response.headers["Content-Type"] == "application/problem+json"
    code: str = json.loads(response.get_data())["code"]
    return code


def readiness(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/readyz")
    return response.status_code, json.loads(response.get_data())


def sample(app: Flask, name: str, labels: dict[str, str]) -> float:
    value = app.gateway.metrics.registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (httpcore.ConnectError("refused"), 502, "refused"),
        (httpcore.ConnectTimeout("no answer"), 504, "timeout"),
        (httpcore.ReadTimeout("slow"), 504, "timeout"),
        (httpcore.ReadError("reset by peer"), 502, "reset"),
        (httpcore.RemoteProtocolError("garbage"), 502, "bad_response"),
    ],
)
def test_connection_failures_and_timeouts_open_the_breaker(
    app: Flask,
    client: FlaskClient,
    upstream: respx.MockRouter,
    error: Exception,
    status: int,
    kind: str,
) -> None:
    route = upstream.route(host="flaky.internal").mock(side_effect=error)
    for _ in range(3):
        assert client.get("/flaky/x").status_code == status
    assert route.call_count == 3
    started = time.perf_counter()
    response = client.get("/flaky/x")
    assert time.perf_counter() - started < 0.5
    assert response.status_code == 503
    assert problem_code(response) == "service_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert route.call_count == 3  # the upstream was not called
    assert sample(app, "gateway_upstream_errors_total", {"upstream": "flaky", "kind": kind}) == 3
    assert (
        sample(app, "gateway_upstream_errors_total", {"upstream": "flaky", "kind": "breaker_open"})
        == 1
    )
    assert sample(app, "gateway_upstream_breaker_open", {"upstream": "flaky"}) == 1


def test_a_post_is_refused_alike_while_open(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(3):
        client.get("/flaky/x")
    response = client.post("/flaky/x", data=b'{"a": 1}', content_type="application/json")
    assert response.status_code == 503
    assert route.call_count == 3


def test_upstream_5xx_answers_do_not_open_it_by_default(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.route(host="flaky.internal").mock(return_value=httpx.Response(500))
    for _ in range(6):
        assert client.get("/flaky/x").status_code == 500
    assert route.call_count == 6
    status, body = readiness(client)
    assert status == 200
    assert body["checks"]["upstream_breakers"]["flaky"] == "closed"


@pytest.mark.parametrize("upstream_status", [500, 502, 503, 504])
def test_upstream_5xx_answers_open_it_with_on_5xx(
    gateway_client: ClientFactory, upstream: respx.MockRouter, upstream_status: int
) -> None:
    client = gateway_client(config_text(on_5xx=True))
    route = upstream.route(host="flaky.internal").mock(return_value=httpx.Response(upstream_status))
    for _ in range(3):
        assert client.get("/flaky/x").status_code == upstream_status
    response = client.get("/flaky/x")
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert route.call_count == 3


def test_4xx_answers_never_count_as_failures(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    client = gateway_client(config_text(on_5xx=True))
    route = upstream.route(host="flaky.internal").mock(return_value=httpx.Response(404))
    for _ in range(6):
        assert client.get("/flaky/x").status_code == 404
    assert route.call_count == 6


def test_the_breaker_belongs_to_one_upstream(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(4):
        client.get("/flaky/x")
    assert client.get("/flaky/x").status_code == 503
    assert client.get("/steady/x").status_code == 200
    status, body = readiness(client)
    assert body["checks"]["upstream_breakers"] == {"flaky": "open", "steady": "closed"}


def test_readyz_is_not_ready_while_a_breaker_is_open_only(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    status, body = readiness(client)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["upstream_breakers"] == {"flaky": "closed", "steady": "closed"}

    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(3):
        client.get("/flaky/x")
    status, body = readiness(client)
    assert status == 503
    assert body["status"] == "not_ready"
    assert body["checks"]["upstream_breakers"]["flaky"] == "open"

    time.sleep(0.35)  # open_seconds 0.3
    # Half-open counts as ready: traffic has to come back for the probe that can close
    # the breaker (an instance out of rotation would otherwise never recover).
    status, body = readiness(client)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["upstream_breakers"]["flaky"] == "half_open"

    route.mock(side_effect=None, return_value=httpx.Response(200, json={"ok": True}))
    assert client.get("/flaky/x").status_code == 200  # the probe
    status, body = readiness(client)
    assert status == 200 and body["status"] == "ready"
    assert body["checks"]["upstream_breakers"]["flaky"] == "closed"
    assert sample(app, "gateway_upstream_breaker_open", {"upstream": "flaky"}) == 0


def test_a_failed_probe_reopens_and_a_later_one_closes(
    app: Flask, client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(3):
        client.get("/flaky/x")
    time.sleep(0.35)
    assert client.get("/flaky/x").status_code == 502  # the probe fails
    assert route.call_count == 4
    response = client.get("/flaky/x")
    assert response.status_code == 503
    assert route.call_count == 4
    assert sample(app, "gateway_upstream_breaker_open", {"upstream": "flaky"}) == 1

    time.sleep(0.35)
    route.mock(side_effect=None, return_value=httpx.Response(200, json={"ok": True}))
    for _ in range(3):
        assert client.get("/flaky/x").status_code == 200
    assert route.call_count == 7
    assert sample(app, "gateway_upstream_breaker_open", {"upstream": "flaky"}) == 0


def test_a_probe_ended_by_a_pool_timeout_leaves_the_breaker_half_open(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(3):
        client.get("/flaky/x")
    time.sleep(0.35)
    route.mock(side_effect=httpcore.PoolTimeout("no free connection"))
    response = client.get("/flaky/x")  # the probe, ended by our own pool
    assert response.status_code == 503
    assert route.call_count == 4
    _, body = readiness(client)
    assert body["checks"]["upstream_breakers"]["flaky"] == "half_open"
    route.mock(side_effect=None, return_value=httpx.Response(200, json={"ok": True}))
    assert client.get("/flaky/x").status_code == 200  # the probe slot was freed
    assert route.call_count == 5
    _, body = readiness(client)
    assert body["checks"]["upstream_breakers"]["flaky"] == "closed"


def test_pool_timeouts_do_not_reset_the_run_of_failures(
    client: FlaskClient, upstream: respx.MockRouter
) -> None:
    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    client.get("/flaky/x")
    client.get("/flaky/x")
    route.mock(side_effect=httpcore.PoolTimeout("no free connection"))
    assert client.get("/flaky/x").status_code == 503
    route.mock(side_effect=httpcore.ConnectError("refused"))
    assert client.get("/flaky/x").status_code == 502  # the third failure in a row
    response = client.get("/flaky/x")
    assert response.status_code == 503 and "Retry-After" in response.headers
    assert route.call_count == 4


def test_without_a_breaker_config_failures_never_short_circuit(
    gateway_client: ClientFactory, upstream: respx.MockRouter
) -> None:
    text = config_text().replace(
        "    breaker: {failures: 3, open_seconds: 0.3, on_5xx: false}\n", ""
    )
    assert "breaker" not in text
    client = gateway_client(text)
    route = upstream.route(host="flaky.internal").mock(side_effect=httpcore.ConnectError("refused"))
    for _ in range(8):
        assert client.get("/flaky/x").status_code == 502
    assert route.call_count == 8
    status, _ = readiness(client)
    assert status == 200


def test_refusing_answers_while_open_without_taking_the_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(1, 10.0, clock=lambda: now[0])
    assert breaker.refusing() is None
    breaker.failed()
    refusal = breaker.refusing()
    assert refusal is not None and refusal.retry_after == 10
    now[0] = 10.0
    assert breaker.refusing() is None  # a probe is due: let the caller ask for it
    breaker.before_call()  # the probe is still there to take
    with pytest.raises(BreakerOpen):
        breaker.before_call()
