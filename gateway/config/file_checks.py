"""The files routes.yaml names (the JWT public key, upstream CA bundles): where each is
found, and whether it can serve.

A probe answers with the end of a sentence that starts with the file's name, or None
when the file is fit, so the caller words the problem at the key that named the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path as FilePath

from gateway.credentials.keys import KeyFileError, key_fits, load_public_key


def resolve_relative(config_file: str, name: str) -> FilePath:
    """Files named in the config are relative to the config file's folder."""
    candidate = FilePath(name)
    return candidate if candidate.is_absolute() else FilePath(config_file).parent / candidate


def public_key_problem(path: FilePath, algorithms: list[str]) -> str | None:
    try:
        key = load_public_key(path.read_bytes())
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except KeyFileError as exc:
        return str(exc)
    unfit = [a for a in algorithms if not key_fits(key, a)]
    if unfit:
        return f"holds a key that cannot verify {', '.join(unfit)}"
    return None


def ca_bundle_problem(path: FilePath) -> str | None:
    if not path.is_file():
        return "does not exist"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"is not a PEM file of CA certificates ({exc})"
    return None
