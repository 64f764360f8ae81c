"""A Flask API gateway driven by one declarative routes.yaml."""

from gateway.app import create_app

__version__ = "0.1.0"
__all__ = ["__version__", "create_app"]
