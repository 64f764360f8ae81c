"""The forwarder's transport seam: a test hands in what requests are sent through."""

from __future__ import annotations

import httpcore

from gateway.config import load_config_text
from gateway.paths import PathTemplate
from gateway.proxy import Forwarder
from gateway.routing import RouteSpec
from tests.policy_support import context

CONFIG = """\
version: 1
upstreams:
  users:
    url: http://users.internal:8081/base
routes:
  - name: users.get
    path: /api/users/{id}
    methods: [GET]
    upstream: users
    upstream_path: /users/{id}
    auth: public
"""


class RecordingTransport:
    def __init__(self) -> None:
        self.requests: list[httpcore.Request] = []
        self.closed = False

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        self.requests.append(request)
        return httpcore.Response(
            200,
            headers=[(b"Content-Type", b"application/json"), (b"Content-Length", b"11")],
            content=b'{"id": "7"}',
        )

    def close(self) -> None:
        self.closed = True


def test_a_handed_in_transport_carries_the_request_and_shapes_nothing_else() -> None:
    config = load_config_text(CONFIG, "routes.yaml", {})
    transport = RecordingTransport()
    forwarder = Forwarder(config, transports={"users": transport})
    route = config.routes[0]
    ctx = context("/api/users/7", {"X-Trace": "t1"})
    ctx.route = RouteSpec(
        0,
        route,
        PathTemplate.parse(route.path),
        PathTemplate.parse(route.upstream_path),
        config.upstreams["users"],
    )
    ctx.params = {"id": "7"}
    response = forwarder.forward(ctx)
    assert response.status_code == 200 and response.get_data() == b'{"id": "7"}'
    [sent] = transport.requests
    assert sent.method == b"GET" and sent.url.target == b"/base/users/7"
    assert (b"X-Trace", b"t1") in sent.headers
    forwarder.close()
    assert transport.closed
