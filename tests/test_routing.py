"""The route table: typed 404/405 and the most specific route first."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.app import Gateway
from gateway.config import load_config_text
from gateway.endpoints import Endpoint
from gateway.problems import MethodNotAllowed, NotFound
from gateway.routing import RouteTable

CONFIG = """\
version: 1
upstreams:
  users:
    url: http://users.internal:8081
routes:
  - name: users.by_id
    path: /users/{id}
    methods: [GET]
    upstream: users
    auth: public
  - name: users.list
    path: /users
    methods: [GET]
    upstream: users
    auth: public
  - name: users.create
    path: /users
    methods: [POST]
    upstream: users
    auth: public
  - name: users.me
    path: /users/me
    methods: [GET, PATCH]
    upstream: users
    auth: public
  - name: files.any
    path: /files/{rest:path}
    methods: [GET, PUT]
    upstream: users
    auth: public
  - name: files.meta
    path: /files/{name}/meta
    methods: [GET]
    upstream: users
    auth: public
  - name: items.write
    path: /items/{id}
    methods: [PUT, DELETE]
    upstream: users
    auth: public
"""


@pytest.fixture(scope="module")
def table() -> Iterator[RouteTable[Endpoint]]:
    gateway = Gateway(load_config_text(CONFIG, "routes.yaml", {}))
    yield gateway.table
    gateway.forwarder.close()


def name(table: RouteTable[Endpoint], method: str, path: str) -> str:
    return table.match(method, path).endpoint.spec.config.name


def test_unknown_path_is_not_found(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(NotFound) as caught:
        table.match("GET", "/nothing/here")
    assert caught.value.status == 404
    assert caught.value.code == "not_found"
    assert "/nothing/here" in caught.value.detail


def test_path_is_matched_case_sensitively(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(NotFound):
        table.match("GET", "/USERS")


def test_prefix_of_a_route_is_not_found(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(NotFound):
        table.match("GET", "/files")


def test_wrong_method_is_405_with_the_allowed_methods(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("DELETE", "/users/42")
    assert caught.value.status == 405
    assert caught.value.code == "method_not_allowed"
    assert caught.value.headers["Allow"] == "GET, HEAD"


def test_405_lists_methods_of_every_route_on_the_path(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("DELETE", "/users")
    assert caught.value.headers["Allow"] == "GET, HEAD, POST"


def test_405_without_get_does_not_offer_head(table: RouteTable[Endpoint]) -> None:
    with pytest.raises(MethodNotAllowed) as caught:
        table.match("GET", "/items/1")
    assert caught.value.headers["Allow"] == "DELETE, PUT"


def test_head_is_served_by_a_get_route(table: RouteTable[Endpoint]) -> None:
    assert name(table, "HEAD", "/users/42") == "users.by_id"


def test_collection_methods_reach_their_own_routes(table: RouteTable[Endpoint]) -> None:
    assert name(table, "GET", "/users") == "users.list"
    assert name(table, "POST", "/users") == "users.create"


def test_literal_route_wins_over_a_parameter_route(table: RouteTable[Endpoint]) -> None:
    assert name(table, "GET", "/users/me") == "users.me"
    assert name(table, "GET", "/users/mine") == "users.by_id"


def test_method_only_the_parameter_route_lacks_is_405_from_the_literal(
    table: RouteTable[Endpoint],
) -> None:
    assert name(table, "PATCH", "/users/me") == "users.me"
    with pytest.raises(MethodNotAllowed):
        table.match("PATCH", "/users/42")


def test_segment_route_wins_over_a_path_route(table: RouteTable[Endpoint]) -> None:
    assert name(table, "GET", "/files/report/meta") == "files.meta"
    assert name(table, "GET", "/files/report/other") == "files.any"
    assert name(table, "GET", "/files/a/b/c/meta") == "files.any"


def test_parameters_are_returned_decoded(table: RouteTable[Endpoint]) -> None:
    match = table.match("GET", "/users/caf\u00e9 au lait")
    assert match.params == {"id": "caf\u00e9 au lait"}
    match = table.match("GET", "/files/a/b c/d.txt")
    assert match.params == {"rest": "a/b c/d.txt"}


def test_trailing_slash_matches_without_a_redirect(table: RouteTable[Endpoint]) -> None:
    assert name(table, "GET", "/users/") == "users.list"
    assert name(table, "GET", "/users/42/") == "users.by_id"


def test_upstream_path_of_a_match_re_encodes_parameters(table: RouteTable[Endpoint]) -> None:
    match = table.match("GET", "/users/a b?c")
    assert match.endpoint.spec.upstream_path(match.params) == "/users/a%20b%3Fc"


def test_a_route_spec_knows_its_upstream(table: RouteTable[Endpoint]) -> None:
    match = table.match("GET", "/users/1")
    assert match.endpoint.spec.upstream.url == "http://users.internal:8081"
    assert match.endpoint.spec.index == 0
