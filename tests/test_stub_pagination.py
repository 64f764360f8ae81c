"""Cursor pagination: limit rules, signed cursors, Link, keyset walks."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upstream_stub import seed
from upstream_stub.app import StubSettings, create_orders_app
from upstream_stub.pagination import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    CursorCodec,
    cursor_secret,
    parse_limit,
)
from upstream_stub.problems import Problem
from upstream_stub.state import orders_state

SECRET = b"s" * 32
LINK = re.compile(r'^<([^>]+)>; rel="next"$')
# The seeded ids depend on how many users are generated: this is the member of the
# property walk's app (5 users), who owns some of its seeded orders.
WALK_USERS = 5
MEMBER_ID = seed.people(seed.DEFAULT_SEED, WALK_USERS)[1].id


def orders_app(count: int = 120, users: int = 20) -> Flask:
    return create_orders_app(
        StubSettings(seed_users=users, seed_orders=count, cursor_secret=SECRET)
    )


@pytest.fixture(scope="module")
def client() -> FlaskClient:
    return orders_app().test_client()


# --- ?limit= ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, DEFAULT_LIMIT),
        ("1", 1),
        ("50", 50),
        ("200", 200),
        ("201", MAX_LIMIT),
        ("100000", MAX_LIMIT),
        ("9" * 5000, MAX_LIMIT),
        ("007", 7),
        (" 5 ", 5),
        ("+5", 5),
    ],
)
def test_limit_defaults_and_clamps(raw: str | None, expected: int) -> None:
    assert parse_limit(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-1", "-500", "000", "abc", "", "1.5", "1e3", "0x10", "5 5"])
def test_limit_below_one_or_not_a_number_is_400(raw: str) -> None:
    with pytest.raises(Problem) as caught:
        parse_limit(raw)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_limit"


def test_limit_over_http(client: FlaskClient) -> None:
    assert len(client.get("/v2/orders").get_json()["data"]) == DEFAULT_LIMIT
    assert len(client.get("/v2/orders?limit=7").get_json()["data"]) == 7
    response = client.get("/v2/orders?limit=1000")
    assert len(response.get_json()["data"]) == 120  # clamped to 200; 120 exist
    for bad in ("0", "-3", "ten"):
        response = client.get(f"/v2/orders?limit={bad}")
        assert response.status_code == 400
        assert response.mimetype == "application/problem+json"
        assert response.get_json(force=True)["code"] == "invalid_limit"


# --- cursors ------------------------------------------------------------------------


def test_a_cursor_is_valid_in_its_own_scope_only() -> None:
    codec = CursorCodec(SECRET)
    cursor = codec.encode("orders", (1, "ord_x"), "tenant-a")
    assert codec.decode("orders", cursor, "tenant-a") == (1, "ord_x")
    for other in ("tenant-b", None, "tenant-a ", ""):
        with pytest.raises(Problem) as caught:
            codec.decode("orders", cursor, other)
        assert caught.value.code == "invalid_cursor"
    unscoped = codec.encode("orders", (1, "ord_x"))
    with pytest.raises(Problem):
        codec.decode("orders", unscoped, "tenant-a")


def test_cursor_round_trip_and_scope() -> None:
    codec = CursorCodec(SECRET)
    cursor = codec.encode("orders", (1_700_000_000_123_456, "ord_abc"))
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", cursor)
    assert codec.decode("orders", cursor) == (1_700_000_000_123_456, "ord_abc")
    with pytest.raises(Problem) as caught:
        codec.decode("users", cursor)
    assert caught.value.status == 400
    assert caught.value.code == "invalid_cursor"


def flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda c: flip(c, 3),  # payload changed
        lambda c: flip(c, len(c) - 3),  # tag changed
        lambda c: c.split(".")[0],  # tag dropped
        lambda c: c + ".x",
        lambda c: c.replace(".", "!"),
        lambda c: "%%%." + c.split(".")[1],
        lambda c: c * 20,  # too long
        lambda c: "",
    ],
)
def test_forged_or_garbled_cursors_are_refused(mangle: Callable[[str], str]) -> None:
    codec = CursorCodec(SECRET)
    cursor = codec.encode("orders", (1, "ord_x"))
    with pytest.raises(Problem) as caught:
        codec.decode("orders", mangle(cursor))
    assert caught.value.code == "invalid_cursor"


def test_a_cursor_signed_with_another_secret_is_refused() -> None:
    cursor = CursorCodec(b"x" * 32).encode("orders", (1, "ord_x"))
    with pytest.raises(Problem):
        CursorCodec(SECRET).decode("orders", cursor)


def test_a_well_signed_cursor_with_a_bad_payload_is_refused() -> None:
    import base64
    import hashlib
    import hmac

    payload = b"orders\x1fnot-a-number\x1fid"
    tag = hmac.new(SECRET, payload, hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    with pytest.raises(Problem):
        CursorCodec(SECRET).decode("orders", f"{b64(payload)}.{b64(tag)}")


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError):
        CursorCodec(b"short")


def test_cursor_secret_comes_from_the_environment_or_is_random(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STUB_CURSOR_SECRET", raising=False)
    assert cursor_secret() != cursor_secret()
    assert len(cursor_secret()) == 32
    monkeypatch.setenv("STUB_CURSOR_SECRET", "shared-secret-for-all-processes")
    assert cursor_secret() == b"shared-secret-for-all-processes"


def test_tampered_cursor_over_http_is_a_400_problem(client: FlaskClient) -> None:
    cursor = client.get("/v2/orders?limit=5").get_json()["next_cursor"]
    response = client.get(f"/v2/orders?cursor={flip(cursor, 2)}")
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["code"] == "invalid_cursor"
    assert body["instance"] == "/v2/orders"


def test_a_users_cursor_is_refused_by_orders() -> None:
    codec = CursorCodec(SECRET)
    client = orders_app().test_client()
    response = client.get(f"/v2/orders?cursor={codec.encode('users', (1, 'usr_x'))}")
    assert response.status_code == 400


def test_v1_and_v2_share_positions(client: FlaskClient) -> None:
    first = client.get("/v1/orders?limit=10").get_json()
    second = client.get(f"/v2/orders?limit=10&cursor={first['next_cursor']}").get_json()
    expected = client.get("/v2/orders?limit=20").get_json()["data"][10:]
    assert [o["id"] for o in second["data"]] == [o["id"] for o in expected]


# --- body and Link ------------------------------------------------------------------


def test_body_and_link_header(client: FlaskClient) -> None:
    response = client.get("/v2/orders?limit=50&status=ignored")
    body = response.get_json()
    assert set(body) == {"data", "next_cursor"}
    match = LINK.match(response.headers["Link"])
    assert match is not None
    target = urlsplit(match.group(1))
    assert not target.scheme and not target.netloc  # relative: the gateway rewrites it
    assert target.path == "/v2/orders"
    query = parse_qs(target.query)
    assert query == {"limit": ["50"], "cursor": [body["next_cursor"]], "status": ["ignored"]}


def test_link_carries_the_clamped_limit(client: FlaskClient) -> None:
    response = client.get("/v1/orders?limit=100")
    assert "limit=100&" in response.headers["Link"]
    small = orders_app(count=450).test_client()
    response = small.get("/v1/orders?limit=999")
    assert len(response.get_json()["data"]) == MAX_LIMIT
    assert f"limit={MAX_LIMIT}&" in response.headers["Link"]


def test_following_links_walks_everything_once(client: FlaskClient) -> None:
    seen: list[str] = []
    url: str | None = "/v2/orders?limit=50"
    pages = 0
    while url is not None:
        response = client.get(url)
        seen += [o["id"] for o in response.get_json()["data"]]
        pages += 1
        link = response.headers.get("Link")
        if response.get_json()["next_cursor"] is None:
            assert link is None
            url = None
        else:
            match = LINK.match(link or "")
            assert match is not None
            url = match.group(1)
    assert pages == 3
    assert len(seen) == len(set(seen)) == 120


# The demo member of orders_app()'s directory (ids depend on the directory's size).
OWNER_ID = seed.people(seed.DEFAULT_SEED, 20)[1].id


@pytest.mark.parametrize(
    "headers",
    [
        {"X-User-Id": "usr_admin", "X-User-Roles": "admin", "X-Tenant-Id": seed.DEMO_TENANT},
        {"X-User-Id": OWNER_ID, "X-User-Roles": "member", "X-Tenant-Id": seed.DEMO_TENANT},
        {"X-User-Roles": "service", "X-Auth-Method": "api_key", "X-Consumer-Id": "reporting"},
    ],
    ids=["admin", "member", "service"],
)
def test_following_links_of_one_users_list_walks_their_orders_once(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    everything = client.get("/v2/orders?limit=200").get_json()["data"]
    expected = [order["id"] for order in everything if order["user_id"] == OWNER_ID]
    assert 6 < len(expected) < len(everything)
    seen: list[str] = []
    url: str | None = f"/v1/orders?user_id={OWNER_ID}&limit=3"
    pages = 0
    while url is not None:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        body = response.get_json()
        assert 0 < len(body["data"]) <= 3
        seen += [order["id"] for order in body["data"]]
        pages += 1
        if body["next_cursor"] is None:
            assert "Link" not in response.headers
            url = None
            continue
        match = LINK.match(response.headers.get("Link", ""))
        assert match is not None
        target = urlsplit(match.group(1))
        assert target.path == "/v1/orders"
        query = parse_qs(target.query)
        assert query == {"user_id": [OWNER_ID], "limit": ["3"], "cursor": [body["next_cursor"]]}
        url = match.group(1)
    assert seen == expected  # newest first, each once, nobody else's
    assert pages == -(-len(expected) // 3)


def test_last_page_has_null_cursor_and_no_link() -> None:
    client = orders_app(count=3).test_client()
    response = client.get("/v2/orders?limit=3")
    assert response.get_json()["next_cursor"] is None
    assert "Link" not in response.headers
    empty = orders_app(count=0).test_client().get("/v2/orders")
    assert empty.get_json() == {"data": [], "next_cursor": None}


# --- the keyset property ------------------------------------------------------------


def visible_ids(app: Flask, member: bool) -> set[str]:
    with app.app_context():
        page = orders_state().orders.page(10**6)
    return {
        order.id
        for order in page.items
        if order.tenant_id == seed.DEMO_TENANT and (not member or order.user_id == MEMBER_ID)
    }


@settings(
    max_examples=60,
    database=None,  # nothing written into the working tree
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    initial=st.integers(min_value=0, max_value=80),
    member=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=25),  # page size
            st.sampled_from(["v1", "v2"]),  # either view: positions are shared
            st.lists(st.booleans(), max_size=6),  # inserts before the next page: mine?
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_a_walk_with_concurrent_inserts_returns_each_initial_item_exactly_once(
    initial: int, member: bool, steps: list[tuple[int, str, list[bool]]]
) -> None:
    app = orders_app(count=initial, users=WALK_USERS)
    client = app.test_client()
    tenant = {"X-Tenant-Id": seed.DEMO_TENANT}
    headers = (
        {"X-User-Id": MEMBER_ID, "X-User-Roles": "member", **tenant}
        if member
        else {"X-User-Id": "usr_admin", "X-User-Roles": "admin", **tenant}
    )
    at_start = visible_ids(app, member)
    seen: list[str] = []
    cursor: str | None = None
    step = 0
    while True:
        # Every page but the last holds at least one item: no walk needs more pages.
        assert step <= len(at_start), "the walk does not end"
        limit, version, inserts = steps[step % len(steps)]
        step += 1
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(f"/{version}/orders?{query}", headers=headers)
        assert response.status_code == 200
        body = response.get_json()
        assert len(body["data"]) <= limit
        seen += [order["id"] for order in body["data"]]
        cursor = body["next_cursor"]
        for mine in inserts:
            owner = MEMBER_ID if mine else "usr_someone_else"
            created = client.post(
                "/v2/orders",
                json={
                    "items": [{"sku": "S", "quantity": 1}],
                    "total": {"amount_cents": 1, "currency": "EUR"},
                },
                headers={"X-User-Id": owner, "X-User-Roles": "member", **tenant},
            )
            assert created.status_code == 201
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an item was returned twice"
    assert set(seen) == at_start, "the walk must return exactly the items there at its start"


def test_the_walks_member_owns_seeded_orders() -> None:
    """Without seeded orders of their own, a member's walk would start empty and prove
    nothing about the member's listing."""
    app = orders_app(count=80, users=WALK_USERS)
    mine = visible_ids(app, member=True)
    assert mine and mine < visible_ids(app, member=False)
