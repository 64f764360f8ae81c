"""The client's answer, made from an upstream's.

Which of the upstream's fields the client sees, with links and redirects rewritten to
point at the gateway; a redirect without its body; an error as a problem document; a
successful body byte for byte (compressed bodies untouched), as it was read whole or
relayed as it arrives (relay.py).
"""

from __future__ import annotations

import httpcore
from werkzeug.datastructures import Headers
from werkzeug.wrappers import Response

from gateway.config.model import Upstream
from gateway.context import RequestContext
from gateway.deadline import deadline_at
from gateway.forward.headers import (
    ERROR_BODY_FIELDS,
    RESPONSE_DROP,
    connection_named,
    header,
    header_values,
)
from gateway.forward.relay import AFTER_CONNECT, Relay, RelayedResponse
from gateway.problems import MAX_UPSTREAM_PROBLEM_BYTES, render, upstream_problem
from gateway.rewrite import LinkRewriter


def client_response(
    ctx: RequestContext,
    upstream_response: httpcore.Response,
    body: bytes | None,
    deadline: float,
    *,
    rewriter: LinkRewriter,
) -> Response:
    """The answer to the client. `body` is the upstream's body if it was read whole,
    None if it is still to be relayed."""
    status = upstream_response.status
    if status >= 400:
        return _error_response(ctx, upstream_response, deadline, rewriter=rewriter)
    if 300 <= status < 400 and status != 304:
        # A redirect's body is a page naming the Location it points at, i.e. the
        # upstream's own address: the client gets the rewritten header only.
        upstream_response.close()
        headers = _response_headers(ctx, upstream_response, rewriter=rewriter, error=True)
        headers["Content-Length"] = "0"
        return RelayedResponse(b"", status=status, headers=headers)
    headers = _response_headers(ctx, upstream_response, rewriter=rewriter, error=False)
    if body is not None:
        response = RelayedResponse(body, status=status)
        # The upstream's own framing: a HEAD answer keeps the Content-Length of the
        # body it describes (werkzeug would set that of the empty body).
        response.headers = headers
        return response
    relay = Relay(upstream_response, deadline, _upstream(ctx).name)
    return RelayedResponse(relay, status=status, headers=headers, direct_passthrough=True)


def _upstream(ctx: RequestContext) -> Upstream:
    assert ctx.route is not None and ctx.route.upstream is not None
    return ctx.route.upstream


def _error_response(
    ctx: RequestContext,
    upstream_response: httpcore.Response,
    deadline: float,
    *,
    rewriter: LinkRewriter,
) -> Response:
    status = upstream_response.status
    body = b""
    content_type = header(upstream_response.headers, b"content-type") or ""
    try:
        if status < 500 and "json" in content_type.lower():
            with deadline_at(deadline):
                for chunk in upstream_response.iter_stream():
                    body += chunk
                    if len(body) > MAX_UPSTREAM_PROBLEM_BYTES:
                        break
    except AFTER_CONNECT:
        body = b""
    finally:
        upstream_response.close()
    if status >= 500:
        headers = Headers()
        retry_after = header(upstream_response.headers, b"retry-after")
        if retry_after is not None:
            headers["Retry-After"] = retry_after
    else:
        headers = _response_headers(ctx, upstream_response, rewriter=rewriter, error=True)
    problem = upstream_problem(
        status, content_type, body, instance=ctx.path, request_id=ctx.request_id
    )
    return render(problem, status, headers)


def _response_headers(
    ctx: RequestContext,
    upstream_response: httpcore.Response,
    *,
    rewriter: LinkRewriter,
    error: bool,
) -> Headers:
    upstream = _upstream(ctx)
    raw = upstream_response.headers
    drop = RESPONSE_DROP | connection_named(header_values(raw, b"connection"))
    if error:
        drop |= ERROR_BODY_FIELDS
    elif header(raw, b"transfer-encoding") is not None:
        # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and the body
        # was read by its chunks. Relayed with the upstream's length, a client would
        # read a body of the wrong size: the next response spliced into this one.
        drop |= {"content-length"}
    headers = Headers()
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1")
        lowered = name.lower()
        if lowered in drop or lowered.startswith("proxy-"):
            continue
        value = raw_value.decode("latin-1")
        if lowered in ("location", "link"):
            value = public_link(ctx, rewriter, lowered, value, upstream=upstream.name)
        headers.add(name, value)
    return headers


def public_link(
    ctx: RequestContext, rewriter: LinkRewriter, field: str, value: str, *, upstream: str
) -> str:
    """A Location or Link value of `upstream`'s, pointing at the gateway instead."""
    assert ctx.route is not None
    rewrite = rewriter.rewrite if field == "location" else rewriter.rewrite_link_header
    return rewrite(
        value,
        upstream=upstream,
        route_index=ctx.route.index,
        public_base=ctx.public_base,
        current=ctx.upstream_template,
    )
