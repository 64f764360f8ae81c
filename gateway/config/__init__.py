"""Loading and validating routes.yaml into the immutable Config model."""

from gateway.config.errors import ConfigError, ConfigProblem
from gateway.config.load import load_config, load_config_text, resolve_config_path
from gateway.config.model import Config, Route, Upstream

__all__ = [
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Route",
    "Upstream",
    "load_config",
    "load_config_text",
    "resolve_config_path",
]
