"""Locust workload for the reference deployment (routes.yaml in front of the two stubs).

Three kinds of client, as the gateway meets them:

- FrontendUser (weight 6): a browser session. It logs in once, as the member or the
  admin, then lists users page by page following `Link: <...>; rel="next"`, opens a
  user, reads orders in v1 (deprecated), in v2 and by `Accept-Version`, and now and
  then creates an order (an admin deletes it again). Its access token is refreshed
  through /api/v1/auth/refresh before it expires.
- ServiceClient (weight 3): a backend job with the API key `demo-service-key`. It
  exports users and orders in big pages and looks single records up.
- AbusiveClient (weight 1): guesses passwords on /api/v1/auth/login as fast as it
  can. Logins are limited to 5/minute per address, so it must see 429s.

Every answer is checked against the contract, not only its status: X-Request-ID on
every response, `Link` pointing at the gateway, v1 and v2 order shapes, Deprecation on
v1, problem+json errors. Requests are named after the gateway's routes (users.list,
orders.v2.get, ...), so the statistics line up with the gateway's metrics and logs.

Expected 429s (the login limit doing its job) are reported as successes under their
own name, `auth.login (expected 429)`, so "failures" in the statistics are unexpected
answers only. Every login the gateway lets through is counted as well: more than
LOGINS_PER_MINUTE of them within a minute is a failure, since all clients here share
one address. `make loadtest` (loadtests/run_loadtest.py) starts the stack with the
limits this workload needs; see loadtests/README.md.

All simulated clients share 127.0.0.1 and so one login budget. The frontend users
therefore share one session per role (class-level, guarded by a lock): the first user
of a role logs in, the others reuse its token, and whoever finds it close to expiry
refreshes it. The abusive clients hold off until those logins are done (at most
ABUSE_HOLD_OFF seconds), as real attackers would come from other addresses.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

API_KEY = os.environ.get("LOADTEST_API_KEY", "demo-service-key")
ACCOUNTS = {
    "member": ("member@example.com", "member-password"),
    "admin": ("admin@example.com", "admin-password"),
}
FRONTEND_ROLES = ("member", "admin")
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
EXPECTED_429 = "auth.login (expected 429)"
PAGE_SIZE = 20  # what a screen shows
DASHBOARD_ORDERS = 5  # the latest orders the dashboard shows
EXPORT_PAGE_SIZE = 100  # what a batch job asks for
MAX_PAGES = 20  # bound on every paging loop
LOGIN_ATTEMPTS = 3  # per session, each after the Retry-After of a 429
ABUSE_HOLD_OFF = 15.0  # seconds the abusive clients wait for the frontend logins
# A token is renewed when less than this share of its lifetime (and at least 5 s) is left.
REFRESH_SHARE = 0.3
# The login limit of routes.yaml (5/minute per address), which every client here shares.
LOGINS_PER_MINUTE = int(os.environ.get("LOADTEST_LOGINS_PER_MINUTE", "5"))

_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')

Check = Callable[[ResponseContextManager, Any], str | None]


# --- judging answers -------------------------------------------------------------------


def _header(response: ResponseContextManager, name: str) -> str | None:
    """A header's value; a repeated header (Link on a deprecated route) joined by commas."""
    value = None if response.headers is None else response.headers.get(name)
    return ", ".join(value) if isinstance(value, list) else value


def describe(response: ResponseContextManager) -> str:
    """A short account of an unexpected answer; equal answers group in failures.csv."""
    if not response.status_code:
        error = getattr(response, "error", None)
        return f"no answer: {type(error).__name__ if error else 'connection failed'}"
    code = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("code") or "")
    except Exception:
        pass
    return f"HTTP {response.status_code} {code}".rstrip()


def judge(
    response: ResponseContextManager, ok: tuple[int, ...] = (200,), check: Check | None = None
) -> Any:
    """Mark `response` (of a catch_response request) a success or a failure.

    A success needs one of the `ok` statuses, an X-Request-ID, a readable JSON body
    (unless 204) and no complaint from `check`. Returns the body (`{}` for 204), or
    None on failure.
    """
    if response.status_code not in ok:
        response.failure(describe(response))
        return None
    if not _header(response, "X-Request-ID"):
        response.failure("no X-Request-ID")
        return None
    try:
        body = {} if response.status_code == 204 else response.json()
        complaint = check(response, body) if check is not None else None
    except Exception as exc:  # an unreadable body is the gateway's failure, not ours
        response.failure(f"unreadable answer: {type(exc).__name__}")
        return None
    if complaint:
        response.failure(complaint)
        return None
    response.success()
    return body


def retry_after(response: ResponseContextManager) -> float:
    try:
        return max(1.0, float(_header(response, "Retry-After") or 1))
    except ValueError:
        return 1.0


def next_url(response: ResponseContextManager) -> str | None:
    match = _NEXT.search(_header(response, "Link") or "")
    return match.group(1) if match else None


def page_check(host: str, item: Check | None = None) -> Check:
    """A collection page: {data: [...], next_cursor}, and a Link that stays on the gateway."""

    def check(response: ResponseContextManager, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return "not a page: no data list"
        link = next_url(response)
        if (link is None) != (body.get("next_cursor") is None):
            return "Link and next_cursor disagree"
        if link is not None and link.startswith("http") and not link.startswith(host + "/"):
            return "Link points away from the gateway"
        if item is not None:
            for entry in body["data"]:
                complaint = item(response, entry)
                if complaint:
                    return complaint
        return None

    return check


def v1_order(response: ResponseContextManager, order: Any) -> str | None:
    if not _header(response, "Deprecation"):
        return "v1 answer without Deprecation"
    total = order.get("total") if isinstance(order, dict) else None
    if isinstance(total, bool) or not isinstance(total, int | float):
        return "v1 order total is not a number"
    return None


def v2_order(response: ResponseContextManager, order: Any) -> str | None:
    total = order.get("total") if isinstance(order, dict) else None
    if not isinstance(total, dict) or not {"amount_cents", "currency"} <= total.keys():
        return "v2 order total is not {amount_cents, currency}"
    return None


ORDER_SHAPES: dict[str, Check] = {"v1": v1_order, "v2": v2_order}


def dashboard_check(response: ResponseContextManager, body: Any) -> str | None:
    """The whole composed answer: a partial one means a part failed under load."""
    if _header(response, "Gateway-Partial"):
        return f"partial answer: {_header(response, 'Gateway-Partial')} failed"
    if not isinstance(body, dict) or set(body) != {"profile", "orders"}:
        return "not {profile, orders}"
    profile, orders = body["profile"], body["orders"]
    if not isinstance(profile, dict) or not {"id", "email"} <= profile.keys():
        return "profile without id and email"
    if not isinstance(orders, dict) or not isinstance(orders.get("data"), list):
        return "orders is not a page"
    if len(orders["data"]) > DASHBOARD_ORDERS:
        return "more orders than asked for"
    for order in orders["data"]:
        if order.get("user_id") != profile["id"]:
            return "an order of someone else on the dashboard"
        complaint = v2_order(response, order)
        if complaint:
            return complaint
    return None


def problem(code: str) -> Check:
    def check(response: ResponseContextManager, body: Any) -> str | None:
        if not (_header(response, "Content-Type") or "").startswith("application/problem+json"):
            return f"{response.status_code} not problem+json"
        if not isinstance(body, dict) or body.get("code") != code:
            return f"{response.status_code} problem without code {code}"
        return None

    return check


def token_body(response: ResponseContextManager, body: Any) -> str | None:
    if not isinstance(body, dict) or not {"access_token", "refresh_token"} <= body.keys():
        return "token answer without access_token and refresh_token"
    return None


class LoginLimit:
    """Watches that the gateway lets at most LOGINS_PER_MINUTE logins through a minute.

    Every client here comes from 127.0.0.1, so every login that is not answered 429
    (a token, or a 401 for a wrong password) counts against the one budget. The window
    is a little under a minute because the times are taken here, not at the gateway.
    """

    WINDOW = 58.0
    passed: deque[float] = deque()

    @classmethod
    def check(cls, response: ResponseContextManager, body: Any) -> str | None:
        started = float(response.request_meta["start_time"])
        while cls.passed and cls.passed[0] < started - cls.WINDOW:
            cls.passed.popleft()
        cls.passed.append(started)
        if len(cls.passed) > LOGINS_PER_MINUTE:
            return f"login limit not enforced: over {LOGINS_PER_MINUTE} logins in a minute"
        return None


# --- shared sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    access_token: str
    refresh_token: str
    expires_at: float
    lifetime: float

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Session:
        lifetime = float(body.get("expires_in") or 300)
        return cls(body["access_token"], body["refresh_token"], time.time() + lifetime, lifetime)

    def due(self) -> bool:
        margin = max(5.0, REFRESH_SHARE * self.lifetime)
        return time.time() >= self.expires_at - margin


class SharedSessions:
    """One login per role for every simulated frontend user of this Locust process."""

    sessions: dict[str, Session] = {}
    locks = {role: BoundedSemaphore() for role in ACCOUNTS}
    ready = Event()  # set once every frontend role has logged in

    @classmethod
    def token(cls, user: FastHttpUser, role: str) -> str | None:
        session = cls.sessions.get(role)
        if session is not None and not session.due():
            return session.access_token
        with cls.locks[role]:
            session = cls.sessions.get(role)  # renewed by another user while we waited?
            if session is not None and not session.due():
                return session.access_token
            renewed = cls._refresh(user, session) if session is not None else None
            if renewed is None:
                renewed = cls._login(user, role)
            if renewed is None:
                cls.sessions.pop(role, None)
                return None
            cls.sessions[role] = renewed
            if all(r in cls.sessions for r in FRONTEND_ROLES):
                cls.ready.set()
            return renewed.access_token

    @classmethod
    def forget(cls, role: str, access_token: str) -> None:
        """Drop a session the gateway refused, so the next request logs in again."""
        session = cls.sessions.get(role)
        if session is not None and session.access_token == access_token:
            cls.sessions.pop(role, None)

    @staticmethod
    def _login(user: FastHttpUser, role: str) -> Session | None:
        email, password = ACCOUNTS[role]
        for _ in range(LOGIN_ATTEMPTS):
            with user.client.post(
                LOGIN,
                json={"email": email, "password": password},
                name="auth.login",
                catch_response=True,
            ) as response:
                if response.status_code != 429:
                    body = judge(response, check=_both(LoginLimit.check, token_body))
                    return None if body is None else Session.from_body(body)
                # The documented limit, reached by the clients sharing this address.
                response.request_meta["name"] = EXPECTED_429
                response.success()
                wait = retry_after(response)
            gevent.sleep(wait)
        return None

    @staticmethod
    def _refresh(user: FastHttpUser, session: Session) -> Session | None:
        with user.client.post(
            REFRESH,
            json={"refresh_token": session.refresh_token},
            name="auth.refresh",
            catch_response=True,
        ) as response:
            body = judge(response, check=token_body)
        return None if body is None else Session.from_body(body)


class Known:
    """Ids seen in listings, for the look-ups of single records (bounded)."""

    users: list[str] = []
    orders: list[str] = []
    LIMIT = 500

    @classmethod
    def add(cls, bucket: list[str], items: list[Any]) -> None:
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                if len(bucket) < cls.LIMIT:
                    bucket.append(item["id"])
                else:
                    bucket[random.randrange(cls.LIMIT)] = item["id"]


# --- the clients --------------------------------------------------------------------------


class GatewayClient(FastHttpUser):
    abstract = True
    network_timeout = 15.0  # above the gateway's upstream timeout (10 s)
    connection_timeout = 5.0

    def auth_headers(self) -> dict[str, str] | None:
        raise NotImplementedError

    def refused(self, headers: dict[str, str]) -> None:
        """The gateway answered 401 to these credentials."""

    def call(
        self,
        method: str,
        url: str,
        name: str,
        check: Check | None = None,
        ok: tuple[int, ...] = (200,),
        extra: dict[str, str] | None = None,
        json: Any = None,
    ) -> tuple[Any, ResponseContextManager | None]:
        """One request with this client's credentials, judged; (body or None, response)."""
        headers = self.auth_headers()
        if headers is None:
            return None, None
        with self.client.request(
            method,
            url,
            headers={**headers, **(extra or {})},
            json=json,
            name=name,
            catch_response=True,
        ) as response:
            body = judge(response, ok, check)
        if response.status_code == 401:
            self.refused(headers)
        return body, response

    def get(
        self,
        url: str,
        name: str,
        check: Check | None = None,
        ok: tuple[int, ...] = (200,),
        extra: dict[str, str] | None = None,
    ) -> tuple[Any, ResponseContextManager | None]:
        return self.call("GET", url, name, check, ok, extra)

    def pages(self, first: str, name: str, size: int, pages: int, item: Check | None = None):
        """Follow `Link: rel="next"` from `first` for up to `pages` pages; yield each data list."""
        url: str | None = f"{first}{'&' if '?' in first else '?'}limit={size}"
        check = _both(page_check(self.host or "", item), _no_repeats(set()))
        for number in range(min(pages, MAX_PAGES)):
            assert url is not None
            body, response = self.get(url, name if number == 0 else f"{name} (next page)", check)
            if body is None or response is None:
                return
            yield body["data"]
            url = next_url(response)
            if url is None:
                return


class FrontendUser(GatewayClient):
    weight = 6
    wait_time = between(0.5, 2.0)
    _numbers = itertools.count()

    def on_start(self) -> None:
        self.role = FRONTEND_ROLES[next(self._numbers) % len(FRONTEND_ROLES)]
        self.auth_headers()  # log in (or join the role's session) once

    def auth_headers(self) -> dict[str, str] | None:
        token = SharedSessions.token(self, self.role)
        return None if token is None else {"Authorization": f"Bearer {token}"}

    def refused(self, headers: dict[str, str]) -> None:
        SharedSessions.forget(self.role, headers["Authorization"].removeprefix("Bearer "))

    @task(4)
    def browse_users(self) -> None:
        seen: list[Any] = []
        for data in self.pages("/api/v1/users", "users.list", PAGE_SIZE, random.randint(1, 4)):
            seen.extend(data)
            gevent.sleep(random.uniform(0.1, 0.5))  # reading the page
        Known.add(Known.users, seen)
        if seen:
            user_id = random.choice(seen)["id"]
            self.get(f"/api/v1/users/{user_id}", "users.get", _same_id(user_id))

    @task(3)
    def dashboard(self) -> None:
        """The first screen: profile and latest orders, one composed request."""
        self.get(f"/api/v1/me/dashboard?limit={DASHBOARD_ORDERS}", "me.dashboard", dashboard_check)

    @task(3)
    def orders_v2(self) -> None:
        self._orders("v2")

    @task(2)
    def orders_v1(self) -> None:
        self._orders("v1")

    @task(2)
    def orders_by_header(self) -> None:
        version = random.choice(("1", "2"))
        shape = ORDER_SHAPES[f"v{version}"]
        self.get(
            f"/api/orders?limit={PAGE_SIZE}",
            f"orders.list (Accept-Version: {version})",
            page_check(self.host or "", shape),
            extra={"Accept-Version": version},
        )

    @task(1)
    def create_order(self) -> None:
        """Create an order and read it back; an admin deletes it again (members cannot)."""
        version = random.choice(("v1", "v2"))
        cents = random.randint(100, 100_000)
        total: Any = cents / 100 if version == "v1" else {"amount_cents": cents, "currency": "EUR"}
        sku = f"SKU-{random.randint(1, 999)}"
        created, response = self.call(
            "POST",
            f"/api/{version}/orders",
            f"orders.{version}.create",
            _created(version),
            ok=(201,),
            json={"items": [{"sku": sku, "quantity": 1}], "total": total},
        )
        if created is None or response is None:
            return
        location = _header(response, "Location") or ""
        self.get(location, f"orders.{version}.get", _same_id(created["id"]))
        if self.role != "admin":
            return
        # Deleted through the header-versioned route, then gone from the URL-versioned one.
        self.call(
            "DELETE",
            f"/api/orders/{created['id']}",
            "orders.delete",
            ok=(204,),
            extra={"Accept-Version": "2"},
        )
        self.get(location, f"orders.{version}.get (deleted)", problem("not_found"), ok=(404,))

    def _orders(self, version: str) -> None:
        body, _ = self.get(
            f"/api/{version}/orders?limit={PAGE_SIZE}",
            f"orders.{version}.list",
            page_check(self.host or "", ORDER_SHAPES[version]),
        )
        if body and body["data"]:
            Known.add(Known.orders, body["data"])
            order_id = random.choice(body["data"])["id"]
            # An admin sees every order, also those other admins are about to delete.
            self.get(
                f"/api/{version}/orders/{order_id}",
                f"orders.{version}.get",
                _either_status(
                    {
                        200: _both(_same_id(order_id), ORDER_SHAPES[version]),
                        404: problem("not_found"),
                    }
                ),
                ok=(200, 404) if self.role == "admin" else (200,),
            )


class ServiceClient(GatewayClient):
    weight = 3
    wait_time = between(0.2, 1.0)

    def auth_headers(self) -> dict[str, str] | None:
        return {"X-API-Key": API_KEY}

    @task(3)
    def export_users(self) -> None:
        for data in self.pages("/api/v1/users", "users.list", EXPORT_PAGE_SIZE, MAX_PAGES):
            Known.add(Known.users, data)

    @task(3)
    def export_orders(self) -> None:
        for data in self.pages("/api/v2/orders", "orders.v2.list", EXPORT_PAGE_SIZE, 3, v2_order):
            Known.add(Known.orders, data)

    @task(3)
    def lookup_user(self) -> None:
        if Known.users:
            user_id = random.choice(Known.users)
            self.get(f"/api/v1/users/{user_id}", "users.get", _same_id(user_id))

    @task(1)
    def lookup_order_v1(self) -> None:
        if Known.orders:
            order_id = random.choice(Known.orders)
            # An order an admin has just deleted is a fair 404 as well.
            self.get(
                f"/api/v1/orders/{order_id}",
                "orders.v1.get",
                _either_status(
                    {200: _both(_same_id(order_id), v1_order), 404: problem("not_found")}
                ),
                ok=(200, 404),
            )


class AbusiveClient(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.2)
    network_timeout = 15.0

    def on_start(self) -> None:
        SharedSessions.ready.wait(timeout=ABUSE_HOLD_OFF)

    @task
    def guess_password(self) -> None:
        email = random.choice(("admin@example.com", "member@example.com", "nobody@example.com"))
        guess = {"email": email, "password": f"guess-{random.randrange(10**9)}"}
        with self.client.post(
            LOGIN, json=guess, name="auth.login (wrong password)", catch_response=True
        ) as response:
            if response.status_code == 429:
                response.request_meta["name"] = EXPECTED_429
                if not _header(response, "Retry-After"):
                    response.failure("429 without Retry-After")
                else:
                    judge(response, (429,), problem("rate_limited"))
            else:
                judge(response, (401,), _both(LoginLimit.check, problem("unauthorized")))


# --- small checks -------------------------------------------------------------------------


def _same_id(expected: str) -> Check:
    def check(response: ResponseContextManager, body: Any) -> str | None:
        if not isinstance(body, dict) or body.get("id") != expected:
            return "answer for another id"
        return None

    return check


def _no_repeats(seen: set[str]) -> Check:
    """Pages of one walk never repeat an item, whatever is inserted or deleted meanwhile."""

    def check(response: ResponseContextManager, body: Any) -> str | None:
        ids = [item.get("id") for item in body["data"] if isinstance(item, dict)]
        if seen.intersection(ids) or len(set(ids)) != len(ids):
            return "page repeats an item of the same walk"
        seen.update(ids)
        return None

    return check


def _both(*checks: Check) -> Check:
    def check(response: ResponseContextManager, body: Any) -> str | None:
        for one in checks:
            complaint = one(response, body)
            if complaint:
                return complaint
        return None

    return check


def _either_status(by_status: dict[int, Check]) -> Check:
    def check(response: ResponseContextManager, body: Any) -> str | None:
        one = by_status.get(response.status_code)
        return one(response, body) if one is not None else None

    return check


def _created(version: str) -> Check:
    def check(response: ResponseContextManager, body: Any) -> str | None:
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return "created order without id"
        location = _header(response, "Location") or ""
        if not location.split("?")[0].endswith(f"/api/{version}/orders/{body['id']}"):
            return "Location is not the gateway path of the order"
        return ORDER_SHAPES[version](response, body)

    return check


# --- final statistics ---------------------------------------------------------------------


@events.quitting.add_listener
def write_final_csv(environment: Environment, **_: Any) -> None:
    """With --csv PREFIX, also write PREFIX_final_stats.csv and PREFIX_final_failures.csv.

    Locust rewrites PREFIX_stats.csv once a second while it runs, so that file can miss
    the requests of the last second; these two are written once, when the run is over,
    in the same format. run_loadtest.py reads them.
    """
    options = environment.parsed_options
    prefix = getattr(options, "csv_prefix", None) if options is not None else None
    if not prefix:
        return
    writer = StatsCSV(environment, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_final_stats.csv", "w", newline="") as handle:
        writer.requests_csv(csv.writer(handle))
    with open(f"{prefix}_final_failures.csv", "w", newline="") as handle:
        writer.failures_csv(csv.writer(handle))
