"""A Flask API gateway driven by one declarative routes.yaml."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.app import create_app

from gateway.version import __version__

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # create_app is imported on first use, not with the package: a gunicorn master
    # must be able to set PROMETHEUS_MULTIPROC_DIR before prometheus_client is
    # imported (it picks its storage mode at import), and the CLI should not pay
    # for the whole app just to run `gateway check`.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(name)
