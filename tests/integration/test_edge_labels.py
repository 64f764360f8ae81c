"""What a client can make the gateway remember: metric series come from fixed sets,
and /readyz tells only operators how the backend is laid out."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import Gateway, StartGateway, http_request

pytestmark = pytest.mark.integration


def _request_series(gateway: Gateway) -> list[dict[str, str]]:
    reply = gateway.get("/metrics")
    assert reply.status == 200, reply.describe()
    families = text_string_to_metric_families(reply.body.decode())
    return [
        dict(sample.labels) | {"value": str(sample.value)}
        for family in families
        if family.name == "gateway_requests"
        for sample in family.samples
        if sample.name == "gateway_requests_total"
    ]


def test_made_up_methods_share_one_metric_label(start_gateway: StartGateway, token: str) -> None:
    gateway = start_gateway(workers=1)
    marker = token[1:9].upper()
    for index in range(200):
        reply = http_request(gateway.port, f"M{marker}{index}", f"/api/ok/{token}")
        assert reply.status == 405, reply.describe()
    series = _request_series(gateway)
    methods = {s["method"] for s in series}
    assert not any(marker in method for method in methods), methods
    other = [s for s in series if s["method"] == "other"]
    assert sum(float(s["value"]) for s in other) >= 200, other
    assert len(series) < 20, series


def test_an_unregistered_upstream_status_is_counted_by_its_class(
    start_gateway: StartGateway, token: str
) -> None:
    gateway = start_gateway(workers=1)
    reply = gateway.get(f"/api/odd-status/{token}")
    assert reply.status == 299, reply.describe()
    statuses = {s["status"] for s in _request_series(gateway)}
    assert "2xx" in statuses and "299" not in statuses, statuses


def test_readyz_details_are_for_operators_only(start_gateway: StartGateway) -> None:
    outsider = start_gateway(workers=1, metrics_allow=["10.0.0.0/8"])
    reply = outsider.get("/readyz")
    assert reply.status == 200, reply.describe()
    assert reply.json() == {"status": "ready"}
    operator = start_gateway(workers=1)
    body = operator.get("/readyz").json()
    assert body["status"] == "ready" and "upstream_breakers" in body["checks"], body
