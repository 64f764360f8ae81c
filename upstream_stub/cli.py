"""`upstream-stub`: run the users or orders stub service.

Usage: upstream-stub --service users|orders [--host H] [--port P] [--threads T]
       [--seed N] [--seed-users N] [--seed-orders N] [--token-ttl S]
       [--refresh-ttl S] [--issuer URL] [--private-key FILE] [--access-log]

A taken port is found by binding a socket first, so the answer is one clear line
and exit code 1, not a gunicorn traceback or a retry loop.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from collections.abc import Sequence

from upstream_stub import seed
from upstream_stub.app import SERVICES, Service, StubSettings, create_app
from upstream_stub.tokens import (
    DEFAULT_ACCESS_TTL,
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_REFRESH_TTL,
    UnusableKey,
    load_private_key,
)

DEFAULT_PORTS: dict[str, int] = {"users": 8081, "orders": 8082}
ISSUER_ENV = "STUB_ISSUER"


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be 1-65535")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="upstream-stub",
        description="Run one bundled stub service (users or orders) under gunicorn.",
    )
    p.add_argument("--service", required=True, choices=SERVICES)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default 8081 users, 8082 orders)")
    p.add_argument("--threads", type=_positive, default=8, help="worker threads (default 8)")
    p.add_argument("--seed", type=int, default=seed.DEFAULT_SEED, help="seed of the demo data")
    p.add_argument(
        "--seed-users",
        type=_count,
        default=seed.DEFAULT_USERS,
        metavar="N",
        help=f"generated users besides the 3 demo users (default {seed.DEFAULT_USERS})",
    )
    p.add_argument(
        "--seed-orders",
        type=_count,
        default=seed.DEFAULT_ORDERS,
        metavar="N",
        help=f"generated orders (default {seed.DEFAULT_ORDERS})",
    )
    p.add_argument(
        "--token-ttl",
        type=_positive,
        default=DEFAULT_ACCESS_TTL,
        metavar="SECONDS",
        help=f"access token lifetime (default {DEFAULT_ACCESS_TTL})",
    )
    p.add_argument(
        "--refresh-ttl",
        type=_positive,
        default=DEFAULT_REFRESH_TTL,
        metavar="SECONDS",
        help=f"refresh token lifetime (default {DEFAULT_REFRESH_TTL})",
    )
    p.add_argument(
        "--issuer",
        default=os.environ.get(ISSUER_ENV) or DEFAULT_ISSUER,
        help=f"the iss of issued tokens (default ${ISSUER_ENV}, else {DEFAULT_ISSUER})",
    )
    p.add_argument("--audience", default=DEFAULT_AUDIENCE, help="the aud of access tokens")
    p.add_argument(
        "--private-key",
        metavar="FILE",
        help="RSA private key (PEM, >= 2048 bits) to sign with; default: a new one per start",
    )
    p.add_argument("--access-log", action="store_true", help="log every request to stdout")
    return p


def port_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be bound, or None if it can (the socket is closed again)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve host {host}: {exc.strerror}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As gunicorn does: a previous run's TIME_WAIT connections do not block the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            return f"cannot bind {host}:{port}: {exc.strerror}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    service: Service = args.service
    port: int = args.port or DEFAULT_PORTS[service]
    private_key = None
    if args.private_key:
        try:
            with open(args.private_key, "rb") as handle:
                private_key = load_private_key(handle.read())
        except OSError as exc:
            print(f"upstream-stub: cannot read {args.private_key}: {exc.strerror}", file=sys.stderr)
            return 1
        except UnusableKey as exc:
            print(f"upstream-stub: {args.private_key}: {exc}", file=sys.stderr)
            return 1
    problem = port_problem(args.host, port)
    if problem is not None:
        print(f"upstream-stub: {problem}", file=sys.stderr)
        return 1
    settings = StubSettings(
        seed=args.seed,
        seed_users=args.seed_users,
        seed_orders=args.seed_orders,
        issuer=args.issuer,
        audience=args.audience,
        token_ttl=args.token_ttl,
        refresh_ttl=args.refresh_ttl,
        private_key=private_key,
    )
    # Imported here so `--help` and the port check stay fast and free of gunicorn.
    from upstream_stub.serving import StubServer, gunicorn_options

    host = f"[{args.host}]" if ":" in args.host else args.host
    StubServer(
        lambda: create_app(service, settings),
        gunicorn_options(args.host, port, args.threads, access_log=args.access_log),
        f"upstream-stub: {service} service listening on http://{host}:{port}",
    ).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
