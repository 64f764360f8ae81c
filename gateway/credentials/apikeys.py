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
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).hexdigest()
        return self._by_digest.get(digest)
