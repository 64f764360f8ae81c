"""`gateway explain`: what one request would meet, computed by the serving code itself."""

from __future__ import annotations

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.app import Gateway
from gateway.config import Config
from gateway.observability import request_id_for
from gateway.paths import unsafe_path_reason
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
    gateway = Gateway(config)
    try:
        ctx = gateway.context(request, request_id_for(request))
        lines = [f"request:   {method} {target}"]
        reason = unsafe_path_reason(ctx.raw_path)
        if reason:
            return lines + [f"answer:    400 invalid_path ({reason})"], False
        if ctx.path in gateway.builtins:
            return lines + ["answer:    built-in endpoint, answered by the gateway"], False
        try:
            match = gateway.table.match(method, ctx.path)
        except GatewayError as error:
            extra = f"; Allow: {error.headers['Allow']}" if "Allow" in error.headers else ""
            return lines + [
                f"answer:    {error.status} {error.code} ({error.detail}){extra}"
            ], False
        route = match.route.route
        ctx.route, ctx.params = match.route, match.params
        where = f" ({route.location})" if route.location else ""
        lines += [
            f"route:     {route.name}{where}",
            f"params:    {match.params or '-'}",
            f"auth:      {'public' if route.is_public else ' or '.join(route.auth)}",
            f"roles:     {', '.join(route.roles) or '-'}",
            "policies:  " + " -> ".join([*match.route.chain.names, "forward"]),
            "version:   - (no version routing on this route)",
        ]
        try:
            url = gateway.forwarder.upstream_url(ctx)
        except GatewayError as error:
            return lines + [f"answer:    {error.status} {error.code} ({error.detail})"], False
        lines.append(f"upstream:  {method} {url}")
        lines.append("headers upstream:")
        lines += [f"  {name}: {value}" for name, value in gateway.forwarder.request_headers(ctx)]
        return lines, True
    finally:
        gateway.forwarder.close()
