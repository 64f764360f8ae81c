"""Config texts shared by the tests of the loader and of the CLI."""

from __future__ import annotations

import hashlib

DIGEST = hashlib.sha256(b"demo-service-key").hexdigest()

# The documented routes.yaml example, with a real digest in place of its placeholder.
REFERENCE_EXAMPLE = f"""\
version: 1
gateway:
  public_url: ""            # base URL clients use; empty: taken from the request
  trusted_proxies: 0        # proxy hops whose X-Forwarded-For is believed
  max_body_bytes: 1048576
cors:
  allow_origins: [http://localhost:3000]
  allow_credentials: true
  allow_methods: [GET, POST, PUT, PATCH, DELETE]
  allow_headers: [Authorization, Content-Type, X-Request-ID, X-API-Key, Accept-Version]
  expose_headers: [X-Request-ID, Link, Location, Retry-After, X-RateLimit-Limit]
  max_age: 600
auth:
  jwt:
    issuer: http://127.0.0.1:8081
    audience: gateway
    algorithms: [RS256]
    jwks_url: ${{USERS_URL:-http://127.0.0.1:8081}}/.well-known/jwks.json
    leeway: 30              # seconds
    roles_claim: role       # dotted path; a string or a list of strings
  api_keys:
    header: X-API-Key
    keys:
      - {{id: reporting, sha256: {DIGEST}, roles: [service]}}
rate_limits:
  storage: ${{RATE_LIMIT_STORAGE:-memory://}}
  strategy: moving-window
  on_storage_error: allow
  default: [1000/minute]
upstreams:
  users:
    url: ${{USERS_URL:-http://127.0.0.1:8081}}
    connect_timeout: 1.0
    timeout: 10.0
    retries: 1
routes:
  - name: users.get
    path: /api/v1/users/{{user_id}}
    methods: [GET]
    upstream: users
    upstream_path: /users/{{user_id}}
    auth: [jwt, api_key]
    roles: [admin, member, service]
    rate_limit: [100/minute]
    rate_limit_key: identity
"""
