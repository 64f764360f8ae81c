"""Signing keys, the JWKS, and the access / refresh token pair."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from upstream_stub.models import User
from upstream_stub.tokens import (
    ACCESS_TYPE,
    REFRESH_TYPE,
    RefreshRefused,
    TokenIssuer,
    UnusableKey,
    generate_key,
    load_private_key,
    public_jwk,
)

USER = User("usr_1", "a@example.com", "A", "member", "acme", 1, 1, "hash")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return generate_key()


@pytest.fixture
def issuer(key: rsa.RSAPrivateKey) -> TokenIssuer:
    return TokenIssuer(key, issuer="http://users.test", audience="gateway", access_ttl=60)


def pem(key: object) -> bytes:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_generated_keys_are_2048_bit_rsa(key: rsa.RSAPrivateKey) -> None:
    assert key.key_size == 2048


def test_kid_is_the_rfc_7638_thumbprint(key: rsa.RSAPrivateKey) -> None:
    jwk = public_jwk(key)
    members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    digest = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == digest
    assert jwk["alg"] == "RS256" and jwk["use"] == "sig"
    assert "d" not in jwk and "p" not in jwk  # public half only
    assert public_jwk(key) == jwk  # stable


def test_rfc_7638_example_thumbprint() -> None:
    # The worked example of RFC 7638 §3.1.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
        "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0"
        "_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhA"
        "I4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    number = int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")
    public = rsa.RSAPublicNumbers(65537, number)

    class FakePrivate:
        def public_key(self) -> object:
            class P:
                def public_numbers(self) -> rsa.RSAPublicNumbers:
                    return public

            return P()

    jwk = public_jwk(FakePrivate())  # type: ignore[arg-type]
    assert jwk["kid"] == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_access_token_verifies_against_the_jwks(issuer: TokenIssuer) -> None:
    pair = issuer.issue(USER)
    header = jwt.get_unverified_header(pair.access_token)
    assert header == {"alg": "RS256", "kid": issuer.kid, "typ": ACCESS_TYPE}
    jwk = jwt.PyJWK(issuer.jwks()["keys"][0])
    claims = jwt.decode(
        pair.access_token, jwk, algorithms=["RS256"], audience="gateway", issuer="http://users.test"
    )
    assert claims["sub"] == "usr_1"
    assert claims["role"] == "member"
    assert claims["tenant_id"] == "acme"
    assert claims["exp"] - claims["iat"] == 60
    assert abs(claims["iat"] - time.time()) < 5
    assert claims["jti"]
    assert pair.expires_in == 60
    assert pair.body()["token_type"] == "Bearer"


def test_refresh_token_is_marked_as_not_an_access_token(issuer: TokenIssuer) -> None:
    pair = issuer.issue(USER)
    assert jwt.get_unverified_header(pair.refresh_token)["typ"] == REFRESH_TYPE
    claims = jwt.decode(pair.refresh_token, options={"verify_signature": False})
    assert claims["token_use"] == "refresh"
    assert claims["aud"] == "http://users.test"  # not the gateway's audience
    assert claims["exp"] - claims["iat"] == 7 * 24 * 3600
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(
            pair.refresh_token,
            jwt.PyJWK(issuer.jwk),
            algorithms=["RS256"],
            audience="gateway",
        )


def test_refresh_is_redeemed_once(issuer: TokenIssuer) -> None:
    token = issuer.issue(USER).refresh_token
    assert issuer.redeem_refresh(token) == "usr_1"
    with pytest.raises(RefreshRefused) as caught:
        issuer.redeem_refresh(token)
    assert caught.value.reason == "reused"


def test_an_access_token_is_not_a_refresh_token(issuer: TokenIssuer) -> None:
    with pytest.raises(RefreshRefused) as caught:
        issuer.redeem_refresh(issuer.issue(USER).access_token)
    assert caught.value.reason == "not_refresh_token"


def test_a_refresh_token_from_another_key_is_refused(issuer: TokenIssuer) -> None:
    other = TokenIssuer(generate_key(), issuer="http://users.test")
    with pytest.raises(RefreshRefused):
        issuer.redeem_refresh(other.issue(USER).refresh_token)


def test_an_expired_refresh_token_is_refused(key: rsa.RSAPrivateKey) -> None:
    past = TokenIssuer(key, issuer="http://users.test", clock=lambda: time.time() - 10**6)
    token = past.issue(USER).refresh_token
    now = TokenIssuer(key, issuer="http://users.test")
    with pytest.raises(RefreshRefused) as caught:
        now.redeem_refresh(token)
    assert caught.value.reason == "expired"


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 100])
def test_garbage_is_refused(issuer: TokenIssuer, token: str) -> None:
    with pytest.raises(RefreshRefused):
        issuer.redeem_refresh(token)


def test_a_refresh_token_with_a_forged_claim_set_is_refused(
    issuer: TokenIssuer, key: rsa.RSAPrivateKey
) -> None:
    forged = jwt.encode(
        {
            "iss": "http://users.test",
            "aud": "http://users.test",
            "sub": "usr_1",
            "jti": "j",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
            "token_use": "access",
        },
        key,
        algorithm="RS256",
        headers={"kid": issuer.kid, "typ": REFRESH_TYPE},
    )
    with pytest.raises(RefreshRefused) as caught:
        issuer.redeem_refresh(forged)
    assert caught.value.reason == "not_refresh_token"


def test_private_keys_load_from_pem(key: rsa.RSAPrivateKey) -> None:
    loaded = load_private_key(pem(key))
    assert public_jwk(loaded) == public_jwk(key)


def test_unusable_keys_are_refused() -> None:
    with pytest.raises(UnusableKey):
        load_private_key(b"not a key")
    with pytest.raises(UnusableKey, match="not an RSA key"):
        load_private_key(pem(ec.generate_private_key(ec.SECP256R1())))
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(UnusableKey, match="1024 bits"):
        load_private_key(pem(small))


def test_lifetimes_must_be_positive(key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError):
        TokenIssuer(key, access_ttl=0)
