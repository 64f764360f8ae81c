"""Composition: the terminal step of a composed route. One request, several upstream
calls, one JSON answer (the backend-for-frontend part of the gateway's job).

Every part runs at once on a pool shared by the worker's requests, under the route's
one deadline, each through the forwarder's own exchange (its upstream's timeout,
retries and breaker). A part still running at the deadline is cut and reported, never
awaited. The answer:

- every part answered 2xx with JSON: 200, `{NAME: <part JSON>, ...}`;
- an optional part failed: still 200, its member null, `_problems: {NAME: <problem>}`
  and `Gateway-Partial: NAME,...`, so a client can tell a partial answer from a
  complete one without parsing it;
- a required part failed: a problem+json for the whole answer, of the first failed
  required part's status (502, 503, 504, or the 4xx the upstream answered), naming
  every failed part in `parts`.

No upstream body, host name or trace ever reaches the client: a part's failure is
described by the gateway, and a part's 4xx problem keeps only its own standard members.
Part bodies are read whole up to `max_part_bytes` and merged as they were received
(only a `fields` filter re-serializes a part).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response

from gateway.context import PartOutcome, RequestContext
from gateway.forward.headers import header, header_values
from gateway.forward.response import public_link
from gateway.headers import PARTIAL_HEADER
from gateway.placeholders import MissingValue, PlaceholderValues
from gateway.problems import (
    BadRequest,
    Forbidden,
    GatewayError,
    UpstreamTimeout,
    UpstreamUnavailable,
    problem_body,
    problem_type,
    render,
    status_title,
    upstream_problem,
)
from gateway.proxy import Forwarder, UpstreamFailed
from gateway.rewrite import LinkRewriter
from gateway.routing import PartSpec

PROBLEMS_MEMBER = "_problems"
_PART_PROBLEM_MEMBERS = ("type", "title", "status", "code", "detail")


@dataclass(slots=True)
class PartResult:
    """One part's JSON (as the bytes to merge) or the problem that stands for it."""

    spec: PartSpec
    json_bytes: bytes | None = None
    problem: dict[str, Any] | None = None
    links: list[str] = field(default_factory=list)
    outcome: PartOutcome | None = None
    headers: dict[str, str] = field(default_factory=dict)  # from a refusal: Retry-After


def _problem(status: int, code: str, detail: str, title: str | None = None) -> dict[str, Any]:
    return {
        "type": problem_type(status),
        "title": title or status_title(status),
        "status": status,
        "code": code,
        "detail": detail,
    }


def _error_problem(error: GatewayError) -> dict[str, Any]:
    return _problem(error.status, error.code, error.detail, error.title)


class Composer:
    def __init__(self, forwarder: Forwarder, rewriter: LinkRewriter, concurrency: int) -> None:
        self.forwarder = forwarder
        self.rewriter = rewriter
        self.concurrency = concurrency
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        # Made on first use in each worker process: a pool made before gunicorn forks
        # (or before gevent patches threading) would have no live threads.
        pid = os.getpid()
        if self._pool is None or self._pool_pid != pid:
            with self._pool_lock:
                if self._pool is None or self._pool_pid != pid:
                    self._pool = ThreadPoolExecutor(
                        max_workers=self.concurrency, thread_name_prefix="compose"
                    )
                    self._pool_pid = pid
        return self._pool

    def compose(self, ctx: RequestContext) -> Response:
        route = ctx.route
        assert route is not None and route.config.compose is not None
        settings = route.config.compose
        # A GET may carry a body: read (and dropped) first, as a forwarded request's is,
        # so a slow one is the client's 408 and nothing is left on the connection.
        self.forwarder.request_body(ctx)
        deadline = time.monotonic() + settings.timeout
        values = placeholder_values(ctx)
        headers = self.forwarder.part_headers(ctx)
        results: dict[str, PartResult] = {}
        running: dict[str, Future[PartResult]] = {}
        for part in route.parts:
            try:
                path = part.template.expand(values)
            except MissingValue as missing:
                results[part.config.name] = _unfilled(part, missing)
                continue
            running[part.config.name] = self._executor().submit(
                self._call,
                ctx,
                part,
                self.forwarder.part_target(part.upstream, path),
                headers,
                deadline,
                settings.max_part_bytes,
            )
        wait(running.values(), timeout=max(0.0, deadline - time.monotonic()))
        for name, future in running.items():
            if future.done():
                results[name] = future.result()
            else:
                # Cut at the route's deadline. The call itself ends by the same deadline
                # (its socket waits are clamped to it), so no pool thread outlives it
                # for long; one not yet started never starts.
                future.cancel()
                part = next(p for p in route.parts if p.config.name == name)
                results[name] = _cut(part, settings.timeout)
        ordered = [results[part.config.name] for part in route.parts]
        ctx.parts = tuple(r.outcome for r in ordered if r.outcome is not None)
        return _answer(ctx, ordered)

    def _call(
        self,
        ctx: RequestContext,
        part: PartSpec,
        target: bytes,
        headers: list[tuple[str, str]],
        deadline: float,
        max_bytes: int,
    ) -> PartResult:
        started = time.perf_counter()
        upstream = part.upstream
        result = PartResult(part)
        try:
            fetched = self.forwarder.fetch(
                upstream, target, headers, deadline, max_bytes, ctx.trace_span
            )
        except UpstreamFailed as failure:
            if failure.kind == "timeout" and time.monotonic() >= deadline:
                assert ctx.route is not None and ctx.route.config.compose is not None
                failure.error = _route_timeout(part, ctx.route.config.compose.timeout)
            result.problem = _error_problem(failure.error)
            result.headers = dict(failure.error.headers)
            result.outcome = PartOutcome(
                part.config.name, upstream.name, failure.error.status, None, failure.kind
            )
            return result
        except GatewayError as error:  # every connection to the upstream is busy
            result.problem = _error_problem(error)
            result.headers = dict(error.headers)
            result.outcome = PartOutcome(part.config.name, upstream.name, error.status, None)
            return result
        elapsed = (time.perf_counter() - started) * 1000
        status = fetched.status
        content_type = header(fetched.headers, b"content-type") or ""
        error_kind: str | None = None
        if fetched.oversized:
            error_kind = "bad_response"
            result.problem = _error_problem(
                UpstreamUnavailable(
                    f"The {upstream.name} service answered the {part.config.name} part with "
                    f"a body over its limit of {max_bytes} bytes."
                )
            )
        elif 200 <= status < 300:
            json_bytes = _json_bytes(fetched.body, content_type, part.config.fields)
            if json_bytes is None:
                error_kind = "bad_response"
                result.problem = _error_problem(
                    UpstreamUnavailable(
                        f"The {upstream.name} service answered the {part.config.name} part "
                        "with a body that is not "
                        + ("a JSON object." if part.config.fields else "JSON.")
                    )
                )
            else:
                result.json_bytes = json_bytes
                result.links = [
                    public_link(ctx, self.rewriter, "link", value, upstream=upstream.name)
                    for value in header_values(fetched.headers, b"link")
                ]
        elif 400 <= status < 500:
            problem = upstream_problem(
                status, content_type, fetched.body, instance=ctx.path, request_id=ctx.request_id
            )
            result.problem = {k: problem[k] for k in _PART_PROBLEM_MEMBERS}
        else:  # a 5xx, or a redirect or 1xx a JSON read cannot follow
            result.problem = _error_problem(
                UpstreamUnavailable(
                    f"The {upstream.name} service answered the {part.config.name} part "
                    f"with {status} {status_title(status)}."
                )
            )
        shown = result.problem["status"] if result.problem else status
        result.outcome = PartOutcome(part.config.name, upstream.name, shown, elapsed, error_kind)
        return result


def placeholder_values(ctx: RequestContext) -> PlaceholderValues:
    """What the request offers to fill its route's part paths with."""
    identity = ctx.identity
    return PlaceholderValues(
        params=ctx.params,
        identity={
            "sub": identity.subject if identity else None,
            "tenant_id": identity.tenant_id if identity else None,
            "consumer_id": identity.consumer_id if identity else None,
        },
        query=ctx.request.args.get,
    )


def _unfilled(part: PartSpec, missing: MissingValue) -> PartResult:
    """A part whose path the request cannot fill is never called."""
    error: GatewayError
    if missing.slot.source == "identity":
        error = Forbidden(f"The {part.config.name} part needs {missing.slot}: {missing.reason}.")
    else:
        error = BadRequest(f"The {part.config.name} part needs {missing.slot}: {missing.reason}.")
    return PartResult(
        part,
        problem=_error_problem(error),
        outcome=PartOutcome(part.config.name, part.upstream.name, error.status, None),
    )


def _route_timeout(part: PartSpec, seconds: float) -> UpstreamTimeout:
    return UpstreamTimeout(
        f"The {part.upstream.name} service did not answer the {part.config.name} part "
        f"within the route's deadline ({seconds:g} seconds)."
    )


def _cut(part: PartSpec, seconds: float) -> PartResult:
    error = _route_timeout(part, seconds)
    return PartResult(
        part,
        problem=_error_problem(error),
        outcome=PartOutcome(part.config.name, part.upstream.name, error.status, None, "timeout"),
    )


def _json_bytes(body: bytes, content_type: str, fields: tuple[str, ...] | None) -> bytes | None:
    """The part's JSON as UTF-8 bytes to merge, or None when it is not JSON (or, with
    `fields`, not an object)."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        return None
    try:
        # NaN and Infinity are Python's, not JSON's (RFC 8259): a browser could not
        # parse the merged answer.
        value = json.loads(body.decode("utf-8"), parse_constant=_not_json)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if fields is None:
        return body  # valid JSON: merged as received, never serialized twice
    if not isinstance(value, dict):
        return None
    kept = {name: value[name] for name in fields if name in value}
    return json.dumps(kept, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


# One link-value of a Link field: <URI> and its parameters, up to the comma before the
# next one (RFC 8288 §3; a comma may stand inside <...> and inside quoted strings).
_LINK_VALUE = re.compile(r'\s*(<[^>]*>(?:[^",<]|"(?:[^"\\]|\\.)*")*)')


def _anchored(field: str, part: str) -> str:
    """Each link-value of a part's Link field, with the part's member as its context
    (RFC 8288 §3.2 anchor): a parameter belongs to the one link-value it follows."""
    values = [m.group(1).rstrip() for m in _LINK_VALUE.finditer(field)]
    anchored = [
        v if re.search(r";\s*anchor\s*=", v, re.IGNORECASE) else f'{v}; anchor="#/{part}"'
        for v in values
    ]
    return ", ".join(anchored)


def _answer(ctx: RequestContext, results: list[PartResult]) -> Response:
    failed = [r for r in results if r.problem is not None]
    required_failed = [r for r in failed if r.spec.config.required]
    if required_failed:
        # The whole answer is the first failed required part's problem, naming them all.
        first = required_failed[0]
        assert first.problem is not None
        status = first.problem["status"]
        body = problem_body(
            status,
            first.problem["code"],
            first.problem["title"],
            f"The {first.spec.config.name} part of this answer failed: "
            + str(first.problem["detail"]),
            instance=ctx.path,
            request_id=ctx.request_id,
            parts={r.spec.config.name: r.problem for r in failed},
        )
        retry = {k: v for k, v in first.headers.items() if k == "Retry-After"}
        return render(body, status, Headers(list(retry.items())))
    chunks = list(_merged(results, {r.spec.config.name: r.problem for r in failed}))
    response = Response(chunks, status=200, content_type="application/json")
    response.headers["Content-Length"] = str(sum(len(c) for c in chunks))
    headers: Headers = response.headers
    for result in results:
        for link in result.links:
            headers.add("Link", _anchored(link, result.spec.config.name))
    if failed:
        headers[PARTIAL_HEADER] = ",".join(r.spec.config.name for r in failed)
        # A partial answer must not be kept by any cache: the next one may be whole.
        headers["Cache-Control"] = "no-store"
    else:
        headers["Cache-Control"] = "private"
    return response


def _merged(results: list[PartResult], problems: dict[str, Any]) -> Iterator[bytes]:
    yield b"{"
    for index, result in enumerate(results):
        name = json.dumps(result.spec.config.name).encode()
        yield (b"," if index else b"") + name + b":"
        yield result.json_bytes if result.json_bytes is not None else b"null"
    failed = {name: p for name, p in problems.items() if p is not None}
    if failed:
        yield b',"' + PROBLEMS_MEMBER.encode() + b'":'
        yield json.dumps(failed, ensure_ascii=False, separators=(",", ":")).encode()
    yield b"}"
