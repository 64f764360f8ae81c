"""Running the gateway under gunicorn (gthread workers) from `gateway serve`."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

from gateway.config import Config


def gunicorn_options(host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # A worker stuck longer than this is replaced; upstream deadlines end well before.
        "timeout": 60,
        "graceful_timeout": 30,
        "keepalive": 5,
        # Headers with "_" are dropped: X_User_Id must not slip past the identity
        # header filter as a twin of X-User-Id.
        "header_map": "drop",
        "accesslog": None,  # the gateway writes its own JSON access log
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "gateway",
    }


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with our options; each worker builds its own app from the config path."""

    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self.gateway_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 25.1 opens a control socket at one fixed path per user, which
            # two gateways on one host would fight over; nothing here uses it.
            self.cfg.set("control_socket_disable", True)

    def load(self) -> Any:
        from gateway.app import create_app

        return create_app(self.gateway_config)
