"""Password hashes: scrypt with a random per-user salt, compared in constant time.

The stub holds real-looking credentials, so it stores them the way a real service
must: never the password, only a memory-hard hash whose parameters travel with it
(so they can be raised later without breaking old hashes). Checking a login for an
unknown user or a user without a password costs the same as a wrong password, so
response time does not reveal which emails exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# RFC 7914 / OWASP: N=2^14, r=8, p=1 uses 16 MiB and a few tens of milliseconds.
_N, _R, _P = 2**14, 8, 1
_KEY_BYTES = 32
_SALT_BYTES = 16
_MAXMEM = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_MAXMEM, dklen=_KEY_BYTES
    )


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$key`, salt and key base64url."""
    salt = os.urandom(_SALT_BYTES)
    key = _derive(password, salt, _N, _R, _P)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(key)}"


# Checked against when there is no real hash, so a miss costs as much as a hit.
_DUMMY = hash_password(os.urandom(16).hex())


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` matches `stored`; None (no password set) never matches."""
    encoded = stored if stored is not None else _DUMMY
    try:
        scheme, n, r, p, salt, key = encoded.split("$")
        if scheme != "scrypt":
            return False
        derived = _derive(password, _unb64(salt), int(n), int(r), int(p))
        matches = hmac.compare_digest(derived, _unb64(key))
    except ValueError:
        return False
    return matches and stored is not None
