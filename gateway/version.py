"""The gateway's version, in a module of its own: the package's __init__ names it, and
modules below the app (the OpenAPI document) read it without importing the package's
entry points."""

__version__ = "0.1.0"
