#!/usr/bin/env python3
"""Per-call cost of JwtVerifier.verify for one RS256 token (2048-bit key)."""

import os
import statistics
import tempfile
import time
import timeit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.config.model import JwtSettings
from gateway.credentials.jwt import JwtVerifier

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
path = os.path.join(tempfile.mkdtemp(), "k.pem")
open(path, "wb").write(pem)
now = int(time.time())
token = jwt.encode(
    {
        "iss": "http://127.0.0.1:8081",
        "aud": "gateway",
        "sub": "user-1",
        "iat": now,
        "exp": now + 3600,
        "role": ["admin", "member"],
        "tenant_id": "t1",
    },
    key,
    algorithm="RS256",
    headers={"kid": "k1"},
)
N, REPEAT = 2000, 7
for cache in (0, 10_000):
    v = JwtVerifier(
        JwtSettings(
            issuer="http://127.0.0.1:8081",
            audience="gateway",
            algorithms=("RS256",),
            public_key_file=path,
            verified_token_cache=cache,
        )
    )
    v.verify(token)  # warm up (and fill the cache when on)
    runs = timeit.repeat(lambda v=v: v.verify(token), number=N, repeat=REPEAT)
    per_call = [r / N * 1e6 for r in runs]
    # single-call samples for a p50/p99 view
    samples = []
    for _ in range(N):
        t = time.perf_counter_ns()
        v.verify(token)
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    print(
        f"verified_token_cache={cache:>5}: mean/call over {N}x{REPEAT}: "
        f"median-of-runs {statistics.median(per_call):.2f} us "
        f"(min {min(per_call):.2f}, max {max(per_call):.2f}); "
        f"single-call p50 {samples[N // 2]:.2f} us, p99 {samples[int(N * 0.99)]:.2f} us"
    )
