"""Public keys from PEM files, and which JWS algorithms each kind of key may verify."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1"}


class KeyFileError(ValueError):
    """A key file that cannot verify tokens."""


def load_public_key(pem: bytes) -> PublicKey:
    """A PEM public key, or the public key of a PEM certificate."""
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = load_pem_x509_certificate(pem).public_key()
        else:
            key = load_pem_public_key(pem)
    except ValueError as exc:
        raise KeyFileError(f"is not a PEM public key or certificate ({exc})") from None
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise KeyFileError(f"holds a {type(key).__name__}, which cannot verify JWTs")
    return key


def key_fits(key: PublicKey, algorithm: str) -> bool:
    """Whether `key` may verify `algorithm` (RFC 8725 §3.1: one key, one family)."""
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[algorithm]
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False
