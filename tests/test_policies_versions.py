"""Version selection by header, and the deprecation notices."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from werkzeug.wrappers import Response

from gateway.config.model import Deprecation, VersionOption, Versions
from gateway.context import RequestContext
from gateway.policies.versions import AnnounceDeprecation, ChooseVersion
from gateway.problems import UnsupportedVersion
from tests.policy_support import context

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
SUNSET = datetime(2027, 1, 1, tzinfo=UTC)
VERSIONS = Versions(
    default="2",
    options=(
        VersionOption("1", "/v1/orders/{id}", Deprecation(SINCE, SUNSET, "/api/v2/orders/{id}")),
        VersionOption("2", "/v2/orders/{id}", None),
    ),
)


def choose(headers: dict[str, str]) -> tuple[ChooseVersion, RequestContext]:
    policy = ChooseVersion(VERSIONS)
    ctx = context("/api/orders/7", headers)
    ctx.params = {"id": "7"}
    assert policy.on_request(ctx) is None
    return policy, ctx


def test_the_header_picks_the_upstream_path() -> None:
    _, ctx = choose({"Accept-Version": "1"})
    assert ctx.version == "1"
    assert ctx.upstream_template is not None
    assert ctx.upstream_template.expand({"id": "7"}) == "/v1/orders/7"


@pytest.mark.parametrize("headers", [{}, {"Accept-Version": "  "}])
def test_no_version_asked_is_the_default(headers: dict[str, str]) -> None:
    _, ctx = choose(headers)
    assert ctx.version == "2"


def test_an_unknown_version_is_400_naming_the_supported_ones() -> None:
    policy = ChooseVersion(VERSIONS)
    with pytest.raises(UnsupportedVersion) as caught:
        policy.on_request(context("/api/orders/7", {"Accept-Version": "3"}))
    assert caught.value.extra["supported"] == ["1", "2"]


def test_a_deprecated_version_answers_with_its_notices_and_vary() -> None:
    policy, ctx = choose({"Accept-Version": "1"})
    response = policy.on_response(ctx, Response("ok"))
    assert response.headers["Deprecation"] == f"@{int(SINCE.timestamp())}"
    assert response.headers["Sunset"] == "Fri, 01 Jan 2027 00:00:00 GMT"
    assert response.headers["Link"] == '<https://gw.test/api/v2/orders/7>; rel="successor-version"'
    assert "Accept-Version" in response.headers["Vary"]


def test_a_current_version_carries_no_notice() -> None:
    policy, ctx = choose({"Accept-Version": "2"})
    response = policy.on_response(ctx, Response("ok"))
    assert "Deprecation" not in response.headers and "Link" not in response.headers


def test_a_route_that_is_a_deprecated_version_announces_it() -> None:
    policy = AnnounceDeprecation(Deprecation(SINCE, None, "https://docs.example/v2"))
    ctx = context("/api/v1/orders")
    response = policy.on_response(ctx, Response("ok"))
    assert response.headers["Deprecation"] == f"@{int(SINCE.timestamp())}"
    assert "Sunset" not in response.headers
    assert response.headers["Link"] == '<https://docs.example/v2>; rel="successor-version"'
