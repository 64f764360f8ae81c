"""`gateway explain`: what one request would meet, computed by the serving code itself."""

from __future__ import annotations

import dataclasses
import json

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from gateway.app import Gateway
from gateway.cache.control import cache_text
from gateway.composer import placeholder_values
from gateway.config import Config, Route
from gateway.context import RequestContext
from gateway.observability import request_id_for
from gateway.placeholders import MissingValue
from gateway.problems import GatewayError


def explain(
    config: Config, method: str, target: str, headers: list[tuple[str, str]]
) -> tuple[list[str], bool]:
    """Lines describing the request's walk, and whether it would be forwarded."""
    path, _, query = target.partition("?")
    environ = EnvironBuilder(
        path=path,
        query_string=query,
        method=method,
        headers=headers,
        base_url="http://gateway.local",
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    ).get_environ()
    environ["RAW_URI"] = target
    request = Request(environ)
    # Counted in memory, never in the deployment's storage: explaining a request must
    # not spend a real client's budget.
    gateway = Gateway(
        dataclasses.replace(
            config, rate_limits=dataclasses.replace(config.rate_limits, storage="memory://")
        )
    )
    try:
        ctx = gateway.context(request, request_id_for(request))
        lines = [f"request:   {method} {target}"]
        # The gateway's own dispatch, with a terminal step that forwards nothing: the
        # route's real policies run (credentials are checked for real, the version is
        # chosen) and the answer says where the request would stop.
        passed = Response(status=299)
        try:
            answer = gateway.dispatch(ctx, lambda _ctx: passed)
        except GatewayError as error:
            extra = f"; Allow: {error.headers['Allow']}" if "Allow" in error.headers else ""
            return lines + [
                f"answer:    {error.status} {error.code} ({error.detail}){extra}"
            ], False
        if ctx.route is None:
            return lines + ["answer:    built-in endpoint, answered by the gateway"], False
        route = ctx.route.config
        where = f" ({route.location})" if route.location else ""
        chain = gateway.table.endpoints[ctx.route.index].chain
        lines += [
            f"route:     {route.name}{where}",
            f"params:    {ctx.params or '-'}",
            f"auth:      {'public' if route.is_public else ' or '.join(route.auth)}",
            f"roles:     {', '.join(route.roles) or '-'}",
            "policies:  "
            + " -> ".join(
                [
                    *chain.names,
                    *(["cache"] if route.cache else []),
                    "compose" if route.compose else "forward",
                ]
            ),
            f"version:   {_version_line(route, ctx.version, request)}",
        ]
        if route.cache is not None:
            lines.append(f"cache:     {cache_text(route.cache)}")
        if answer is not passed:
            body = json.loads(answer.get_data() or b"{}")
            return lines + [
                f"answer:    {answer.status_code} {body.get('code', '')} ({body.get('detail', '')})"
            ], False
        if ctx.identity is not None:
            lines.append(
                f"identity:  {ctx.identity.rate_limit_key} via {ctx.identity.method}, "
                f"roles {', '.join(ctx.identity.roles) or '-'}"
            )
        if route.compose is not None:
            return lines + _parts_lines(gateway, ctx), True
        try:
            url = gateway.forwarder.upstream_url(ctx)
        except GatewayError as error:
            return lines + [f"answer:    {error.status} {error.code} ({error.detail})"], False
        lines.append(f"upstream:  {method} {url}")
        lines.append("headers upstream:")
        lines += [f"  {name}: {value}" for name, value in gateway.forwarder.request_headers(ctx)]
        return lines, True
    finally:
        gateway.close()


def _parts_lines(gateway: Gateway, ctx: RequestContext) -> list[str]:
    """Each part's upstream URL as this request fills it, and the headers they share."""
    assert ctx.route is not None and ctx.route.config.compose is not None
    forwarder = gateway.forwarder
    values = placeholder_values(ctx)
    lines = [f"compose:   {ctx.route.config.compose.timeout:g} s for the whole answer"]
    for part in ctx.route.parts:
        flag = "required" if part.config.required else "optional"
        try:
            target = forwarder.part_target(part.upstream, part.template.expand(values))
        except MissingValue as missing:
            lines.append(f"  part {part.config.name} ({flag}): not called, {missing}")
            continue
        lines.append(
            f"  part {part.config.name} ({flag}): GET {forwarder.url_of(part.upstream, target)}"
        )
    lines.append("headers upstream (each part):")
    lines += [f"  {name}: {value}" for name, value in forwarder.part_headers(ctx)]
    return lines


def _version_line(route: Route, chosen: str | None, request: Request) -> str:
    if route.versions is not None:
        header = route.versions.header
        how = f"from {header}" if request.headers.get(header) else f"default, no {header}"
        return (
            f"{chosen or request.headers.get(header)} ({how})"
            if chosen
            else (
                f"{request.headers.get(header)!r} is not one of "
                f"{', '.join(o.name for o in route.versions.options)}"
            )
        )
    if route.deprecation is not None:
        return "this route is a deprecated version"
    return "- (no version routing on this route)"
