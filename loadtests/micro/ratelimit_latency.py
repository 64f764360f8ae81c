#!/usr/bin/env python3
"""Added latency of one rate-limit check on Redis: p50/p99 of N sequential requests
through a 1-worker gateway (gateway serve --workers 1 --threads 4), one route with a
limit (moving-window, Redis 127.0.0.1:6379) and one with rate_limit: [], interleaved,
over one keep-alive connection each, to the suite's recording upstream (echo).

    ratelimit_latency.py [N] [strategy] [--jwt]

With --jwt both routes take a bearer token (HS256, the same token on every request)
and the brute-force guard is on ([10/minute]), as on an authenticated route: the
guard's cost, if any, then shows in both rows, the route limit's in the difference."""

import http.client
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import jwt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.integration.redis_support import limited_config, route, start_limited_gateway
from tests.integration.upstream import MisbehavingUpstream

args = [a for a in sys.argv[1:] if not a.startswith("--")]
with_jwt = "--jwt" in sys.argv[1:]
N = int(args[0]) if args else 2000
strategy = args[1] if len(args) > 1 else "moving-window"
up = MisbehavingUpstream().start()
tag = uuid.uuid4().hex[:8]
limited, free = f"lat-limited-{tag}", f"lat-free-{tag}"
auth_routes = ["jwt"] if with_jwt else "public"
secret = secrets.token_urlsafe(40)
extra = (
    {
        "auth": {
            "jwt": {"issuer": "lat", "audience": "gw", "algorithms": ["HS256"], "secret": secret}
        }
    }
    if with_jwt
    else {}
)
cfg = limited_config(
    up.url,
    [
        route(limited, rate_limit=["1000000/minute"], auth=auth_routes),
        route(free, rate_limit=[], auth=auth_routes),
    ],
    rate_limits={
        "storage": "redis://127.0.0.1:6379/0",
        "strategy": strategy,
        "default": [],
        "auth_failures": ["10/minute"] if with_jwt else [],
    },
    **extra,
)
now = int(time.time())
token = jwt.encode(
    {"iss": "lat", "aud": "gw", "sub": f"lat-{tag}", "exp": now + 3600}, secret, algorithm="HS256"
)
headers = {"Authorization": f"Bearer {token}"} if with_jwt else {}
gw = start_limited_gateway(Path(tempfile.mkdtemp()), cfg, workers=1, threads=4)
try:
    conns = {
        p: http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10) for p in (limited, free)
    }
    times = {limited: [], free: []}
    for _ in range(200):  # warm-up
        for p, c in conns.items():
            c.request("GET", f"/{p}/w", headers=headers)
            c.getresponse().read()
    for i in range(N):
        order = (limited, free) if i % 2 == 0 else (free, limited)
        for p in order:
            c = conns[p]
            t = time.perf_counter()
            c.request("GET", f"/{p}/x{i}", headers=headers)
            r = c.getresponse()
            r.read()
            times[p].append((time.perf_counter() - t) * 1000)
            assert r.status == 200, r.status

    def pct(xs, q):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    for name, p in (("with limit   ", limited), ("without limit", free)):
        xs = times[p]
        print(
            f"{name} N={len(xs)} p50={pct(xs, 0.5):.3f} ms p99={pct(xs, 0.99):.3f} ms "
            f"mean={statistics.mean(xs):.3f} ms"
        )
    a, b = times[limited], times[free]
    print(
        f"added: p50 {pct(a, 0.5) - pct(b, 0.5):+.3f} ms, "
        f"p99 {pct(a, 0.99) - pct(b, 0.99):+.3f} ms ({strategy}{', jwt' if with_jwt else ''})"
    )
finally:
    gw.server.stop()
    up.stop()
