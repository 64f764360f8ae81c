"""The bundled stub upstream (users and orders services) for demos and tests.

Modules, one concern each:
    app         the app factories (create_users_app, create_orders_app, create_app)
    auth        POST /auth/login, POST /auth/refresh, GET /.well-known/jwks.json
    users       /users and /users/{id}
    orders      /v1/orders and /v2/orders, scoped to the caller's tenant and role;
                ?user_id= lists one user's
    conditional ETag, Cache-Control, 304 and 412 (If-None-Match, If-Match)
    pagination  ?limit= rules, HMAC-signed cursors, Link headers
    store       the thread-safe in-memory collection with keyset paging
    seed        the deterministic demo users and orders
    models      records and their JSON representations
    tokens      RS256 keys, JWKS, access and refresh tokens
    passwords   scrypt password hashes
    callers     the caller as the gateway's identity headers describe it; tenant rules
    validation  JSON bodies and 422 field errors
    problems    RFC 9457 problem+json for every error
    state       per-app state
    serving     gunicorn settings and worker
    cli         the `upstream-stub` command
"""
