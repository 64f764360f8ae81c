"""API keys, known only by their SHA-256 digests.

The config never holds a raw key, and neither does the gateway's memory past the
lookup: the presented key is hashed and the digest looked up, so a key cannot leak
from a config file, a core dump or a log line.
"""

from __future__ import annotations

import hashlib

from gateway.config.model import ApiKey, ApiKeySettings

MAX_KEY_CHARS = 512


class ApiKeyRing:
    def __init__(self, settings: ApiKeySettings) -> None:
        self.header = settings.header
        self._by_digest = {key.sha256.lower(): key for key in settings.keys}

    def lookup(self, presented: str) -> ApiKey | None:
        if not presented or len(presented) > MAX_KEY_CHARS:
            return None
        # WSGI gives header values as latin-1 decoded bytes: hash the bytes as sent, the
        # same bytes `gateway hash-key` hashes (the key's UTF-8).
        digest = hashlib.sha256(presented.encode("latin-1", "replace")).hexdigest()
        return self._by_digest.get(digest)
