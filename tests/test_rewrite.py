"""Link and Location values pointing at an upstream, turned into public URLs."""

from __future__ import annotations

import pytest

from gateway.config.model import Route, Upstream
from gateway.rewrite import LinkRewriter

PUBLIC = "https://api.example.com"


def route(name: str, path: str, upstream: str, upstream_path: str) -> Route:
    return Route(name, path, ("GET",), upstream, upstream_path)


UPSTREAMS = {
    "users": Upstream("users", "http://users.internal:8081"),
    "orders": Upstream("orders", "http://orders.internal:8082/svc"),
}
ROUTES = (
    route("users.list", "/api/v1/users", "users", "/users"),  # 0
    route("users.get", "/api/v1/users/{user_id}", "users", "/users/{user_id}"),  # 1
    route("users.v2.get", "/api/v2/users/{user_id}", "users", "/users/{user_id}"),  # 2
    route("orders.list", "/api/v1/orders", "orders", "/orders"),  # 3
    route("orders.get", "/api/v1/orders/{order_id}", "orders", "/orders/{order_id}"),  # 4
    route("files", "/api/v1/files/{rest:path}", "users", "/storage/{rest:path}"),  # 5
)


@pytest.fixture
def rewriter() -> LinkRewriter:
    return LinkRewriter(UPSTREAMS, ROUTES)


def rewrite(rewriter: LinkRewriter, value: str, route_index: int = 0) -> str:
    upstream = ROUTES[route_index].upstream
    return rewriter.rewrite(value, upstream=upstream, route_index=route_index, public_base=PUBLIC)


# --- Location -----------------------------------------------------------------------------


def test_absolute_upstream_url_becomes_the_public_route_url(rewriter: LinkRewriter) -> None:
    value = "http://users.internal:8081/users/42"
    assert rewrite(rewriter, value) == "https://api.example.com/api/v1/users/42"


def test_current_route_is_preferred_when_several_routes_map_the_same_path(
    rewriter: LinkRewriter,
) -> None:
    value = "http://users.internal:8081/users/42"
    assert rewrite(rewriter, value, route_index=1) == "https://api.example.com/api/v1/users/42"
    assert rewrite(rewriter, value, route_index=2) == "https://api.example.com/api/v2/users/42"


def test_other_routes_of_the_same_upstream_are_found(rewriter: LinkRewriter) -> None:
    # A POST to the collection answers with the Location of the item route.
    assert rewrite(rewriter, "http://users.internal:8081/users/7", route_index=0) == (
        "https://api.example.com/api/v1/users/7"
    )
    assert rewrite(rewriter, "http://users.internal:8081/users", route_index=1) == (
        "https://api.example.com/api/v1/users"
    )


def test_query_and_fragment_are_kept(rewriter: LinkRewriter) -> None:
    value = "http://users.internal:8081/users?cursor=abc%3D&limit=5#top"
    assert (
        rewrite(rewriter, value) == "https://api.example.com/api/v1/users?cursor=abc%3D&limit=5#top"
    )


def test_base_path_of_the_upstream_url_is_stripped(rewriter: LinkRewriter) -> None:
    value = "http://orders.internal:8082/svc/orders/9?expand=items"
    assert rewrite(rewriter, value, route_index=3) == (
        "https://api.example.com/api/v1/orders/9?expand=items"
    )


def test_relative_upstream_path_is_rewritten(rewriter: LinkRewriter) -> None:
    assert rewrite(rewriter, "/users/42") == "https://api.example.com/api/v1/users/42"
    assert rewrite(rewriter, "/svc/orders/9", route_index=4) == (
        "https://api.example.com/api/v1/orders/9"
    )


def test_path_parameter_routes_are_mapped_back(rewriter: LinkRewriter) -> None:
    value = "http://users.internal:8081/storage/a/b%20c.txt"
    assert rewrite(rewriter, value, route_index=5) == (
        "https://api.example.com/api/v1/files/a/b%20c.txt"
    )


def test_encoded_parameters_stay_encoded(rewriter: LinkRewriter) -> None:
    value = "http://users.internal:8081/users/caf%C3%A9"
    assert (
        rewrite(rewriter, value, route_index=1) == "https://api.example.com/api/v1/users/caf%C3%A9"
    )


def test_a_link_to_another_upstream_is_mapped_through_that_upstreams_routes(
    rewriter: LinkRewriter,
) -> None:
    value = "http://orders.internal:8082/svc/orders/3"
    assert rewrite(rewriter, value, route_index=1) == "https://api.example.com/api/v1/orders/3"


def test_default_ports_and_host_case_are_recognised(rewriter: LinkRewriter) -> None:
    upstreams = {"users": Upstream("users", "http://users.internal")}
    local = LinkRewriter(upstreams, (ROUTES[1],))
    for value in ("http://users.internal/users/1", "HTTP://Users.Internal:80/users/1"):
        assert local.rewrite(value, upstream="users", route_index=0, public_base=PUBLIC) == (
            "https://api.example.com/api/v1/users/1"
        )


def test_unmatched_upstream_path_still_gets_the_public_host(rewriter: LinkRewriter) -> None:
    value = "http://users.internal:8081/internal/health"
    result = rewrite(rewriter, value)
    assert result.startswith(PUBLIC + "/")
    assert "users.internal" not in result


def test_path_outside_the_base_path_still_gets_the_public_host(rewriter: LinkRewriter) -> None:
    result = rewrite(rewriter, "http://orders.internal:8082/metrics", route_index=3)
    assert result == "https://api.example.com/metrics"


def test_public_base_with_a_prefix_is_used_as_is(rewriter: LinkRewriter) -> None:
    result = rewriter.rewrite(
        "/users/1", upstream="users", route_index=0, public_base="https://example.com/gw"
    )
    assert result == "https://example.com/gw/api/v1/users/1"


@pytest.mark.parametrize(
    "value",
    [
        "https://docs.example.org/users/42",
        "http://users.internal:9999/users/42",
        "https://users.internal:8081/users/42",
        "//cdn.example.org/x.js",
        "users/42",
        "?page=2",
        "mailto:admin@example.com",
        "",
    ],
)
def test_outside_and_relative_reference_values_are_unchanged(
    rewriter: LinkRewriter, value: str
) -> None:
    assert rewrite(rewriter, value) == value


def test_two_upstreams_on_one_origin_are_told_apart_by_base_path() -> None:
    upstreams = {
        "users": Upstream("users", "http://svc.internal:8080/users-svc"),
        "orders": Upstream("orders", "http://svc.internal:8080/orders-svc"),
    }
    routes = (
        route("users.get", "/api/users/{id}", "users", "/users/{id}"),
        route("orders.get", "/api/orders/{id}", "orders", "/orders/{id}"),
    )
    local = LinkRewriter(upstreams, routes)
    result = local.rewrite(
        "http://svc.internal:8080/orders-svc/orders/7",
        upstream="orders",
        route_index=1,
        public_base=PUBLIC,
    )
    assert result == "https://api.example.com/api/orders/7"


# --- Link ---------------------------------------------------------------------------------


def test_link_header_rewrites_every_upstream_target(rewriter: LinkRewriter) -> None:
    value = (
        '<http://users.internal:8081/users?cursor=n1>; rel="next", '
        '</users?cursor=p1>; rel="prev", '
        '<https://docs.example.org/paging>; rel="help"'
    )
    result = rewriter.rewrite_link_header(
        value, upstream="users", route_index=0, public_base=PUBLIC
    )
    assert result == (
        '<https://api.example.com/api/v1/users?cursor=n1>; rel="next", '
        '<https://api.example.com/api/v1/users?cursor=p1>; rel="prev", '
        '<https://docs.example.org/paging>; rel="help"'
    )


def test_link_header_without_targets_is_unchanged(rewriter: LinkRewriter) -> None:
    value = 'rel="next"'
    assert (
        rewriter.rewrite_link_header(value, upstream="users", route_index=0, public_base=PUBLIC)
        == value
    )
