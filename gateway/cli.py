"""The `gateway` command: check, routes, schema, explain, diff, openapi, serve, demo,
hash-key."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from gateway.cache.control import cache_text
from gateway.config import Config, ConfigError, Route, load_config, resolve_config_path
from gateway.config.schema import INCLUDED_SCHEMA, SCHEMA


def _load(path: str | None, *, out: TextIO | None = None) -> Config:
    """The config, or exit 1 after printing every problem as FILE:LINE:COL: message."""
    resolved = resolve_config_path(path)
    out = out or sys.stderr
    try:
        return load_config(resolved)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=out)
        count = len(exc.problems)
        print(f"{resolved}: {count} problem{'s' if count != 1 else ''}", file=out)
        raise SystemExit(1) from None


def cmd_check(args: argparse.Namespace) -> int:
    print(_load(args.config, out=sys.stdout).summary())
    return 0


def _auth_text(config: Config, index: int) -> str:
    route = config.routes[index]
    return "public" if route.is_public else ",".join(route.auth)


def _versions_text(route: Route) -> str:
    """e.g. `1*,2 by Accept-Version (default 2)`; * marks a deprecated version."""
    if route.versions is not None:
        names = ",".join(o.name + ("*" if o.deprecation else "") for o in route.versions.options)
        return f"{names} by {route.versions.header} (default {route.versions.default})"
    if route.deprecation is not None:
        sunset = route.deprecation.sunset
        return "deprecated" + (f", sunset {sunset.date().isoformat()}" if sunset else "")
    return "-"


def _compose_text(route: Route) -> str:
    assert route.compose is not None
    return f"{len(route.compose.parts)} parts within {route.compose.timeout:g} s"


def cmd_routes(args: argparse.Namespace) -> int:
    config = _load(args.config)
    header = [
        "NAME",
        "METHODS",
        "PATH",
        "UPSTREAM",
        "UPSTREAM PATH",
        "AUTH",
        "ROLES",
        "RATE LIMIT",
        "VERSIONS",
        "CACHE",
        "FILE",
    ]
    # Where each route is written: its file relative to the entry file's folder.
    folder = os.path.dirname(config.source) or "."
    rows = [header]
    for index, route in enumerate(config.routes):
        at = route.location
        written = f"{os.path.relpath(at.file, folder)}:{at.line}" if at else "-"
        if route.rate_limit is None:
            limit = "default: " + (",".join(r.text for r in config.rate_limits.default) or "none")
        else:
            limit = ",".join(r.text for r in route.rate_limit) or "none"
        rows.append(
            [
                route.name,
                ",".join(route.methods),
                route.path,
                route.upstream or "(compose)",
                route.upstream_path or _compose_text(route),
                _auth_text(config, index),
                ",".join(route.roles) or "-",
                limit + ("" if route.rate_limit_key == "identity" else " per ip"),
                _versions_text(route),
                cache_text(route.cache) if route.cache else "-",
                written,
            ]
        )
        for part in route.compose.parts if route.compose else ():
            # Each part on a line of its own, under its route: what it calls, and
            # whether the answer fails without it.
            flag = "" if part.required else " (optional)"
            rows.append([f"  + {part.name}{flag}", "", "", part.upstream, part.path, *[""] * 6])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(INCLUDED_SCHEMA if args.include else SCHEMA, indent=2))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from gateway.explain import explain

    config = _load(args.config)
    headers = []
    for item in args.header:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"-H {item!r}: write 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    lines, ok = explain(config, args.method.upper(), args.path, headers)
    print("\n".join(lines))
    return 0 if ok else 1


def cmd_diff(args: argparse.Namespace) -> int:
    from gateway.config.diff import run_diff

    return run_diff(args.old, args.new)


def cmd_openapi(args: argparse.Namespace) -> int:
    from gateway.openapi import openapi_document

    print(json.dumps(openapi_document(_load(args.config)), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.serving import GatewayServer, gunicorn_options

    path = str(resolve_config_path(args.config))
    config = _load(path)  # refuse a bad file before any port is bound
    if config.rate_limits.storage.startswith("memory://") and args.workers > 1:
        print(
            f"gateway serve: warning: rate limits are kept in memory:// and there are "
            f"{args.workers} workers, so each worker counts alone and a client may get up "
            "to workers x limit; set rate_limits.storage (RATE_LIMIT_STORAGE) to a "
            "redis:// URL to share counters.",
            file=sys.stderr,
        )
    options = gunicorn_options(
        args.host, args.port, args.workers, args.threads, args.worker_connections, watch=args.watch
    )
    GatewayServer(path, config, options).run()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    path = resolve_config_path(args.config)
    _load(path)  # a broken routes.yaml stops here, with its messages
    return run_demo(path, args.port, args.users_port, args.orders_port, args.workers)


def cmd_hash_key(args: argparse.Namespace) -> int:
    key = args.key if args.key is not None else sys.stdin.readline().rstrip("\n")
    if not key:
        print("no key given", file=sys.stderr)
        return 2
    print(hashlib.sha256(key.encode()).hexdigest())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c", "--config", help="routes.yaml (default: $GATEWAY_CONFIG, else ./routes.yaml)"
        )
        return p

    with_config(commands.add_parser("check", help="validate the config")).set_defaults(
        func=cmd_check
    )
    with_config(commands.add_parser("routes", help="print the route table")).set_defaults(
        func=cmd_routes
    )
    schema = commands.add_parser("schema", help="print the JSON Schema of routes.yaml")
    schema.add_argument(
        "--include", action="store_true", help="the schema of a file that include: names"
    )
    schema.set_defaults(func=cmd_schema)
    explain = with_config(commands.add_parser("explain", help="show what a request would meet"))
    explain.add_argument("method")
    explain.add_argument("path", help="path and optional query, e.g. /api/v1/users?limit=5")
    explain.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        help="a request header, 'Name: value' (repeatable)",
    )
    explain.set_defaults(func=cmd_explain)
    diff = commands.add_parser(
        "diff",
        help="what changed between two configs (exit 0: the same in effect, 1: they "
        "differ, 2: a file is invalid)",
    )
    diff.add_argument("-c", "--config", dest="old", required=True, help="the old routes.yaml")
    diff.add_argument("new", help="the new routes.yaml")
    diff.set_defaults(func=cmd_diff)
    with_config(
        commands.add_parser("openapi", help="print the OpenAPI 3.1 document of the public routes")
    ).set_defaults(func=cmd_openapi)
    serve = with_config(commands.add_parser("serve", help="run under gunicorn"))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument(
        "--threads", type=int, default=8, help="threads per worker (threaded worker only)"
    )
    serve.add_argument(
        "--worker-connections",
        type=int,
        default=1000,
        help="connections one worker serves at once (the default event-loop worker)",
    )
    serve.add_argument(
        "--watch",
        action="store_true",
        help="reload when a config file changes (for development; kill -HUP reloads always)",
    )
    serve.set_defaults(func=cmd_serve)
    demo = with_config(
        commands.add_parser("demo", help="run the users and orders stubs and the gateway")
    )
    demo.add_argument("--port", type=int, default=8080, help="gateway port")
    demo.add_argument("--users-port", type=int, default=8081)
    demo.add_argument("--orders-port", type=int, default=8082)
    # One worker: the demo's limits live in memory:// unless RATE_LIMIT_STORAGE names a
    # Redis, and several workers would each count alone.
    demo.add_argument("--workers", type=int, default=1)
    demo.set_defaults(func=cmd_demo)
    hash_key = commands.add_parser(
        "hash-key", help="print the SHA-256 of an API key (reads stdin when no key is given)"
    )
    hash_key.add_argument("key", nargs="?")
    hash_key.set_defaults(func=cmd_hash_key)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except BrokenPipeError:  # `gateway routes | head`: the reader left, nothing to say
        sys.stderr.close()
        return 0
    return result


if __name__ == "__main__":
    raise SystemExit(main())
