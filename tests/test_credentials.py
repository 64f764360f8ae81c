"""Credential checks: JwtVerifier, the JWKS key cache, API keys and Identity.

The JWKS endpoint is an httpx.MockTransport and time is a fake clock, so cache
expiry, cooldowns and retry hints are checked exactly and without waiting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

import gateway.credentials.jwt as jwt_module
from gateway.config.model import ApiKey, ApiKeySettings, JwtSettings
from gateway.credentials.apikeys import MAX_KEY_CHARS, ApiKeyRing
from gateway.credentials.identity import (
    Identity,
    UnusableClaim,
    claim_at,
    header_safe,
    identity_from_claims,
    roles_from,
)
from gateway.credentials.jwks import JwksKeys, KeysUnavailable
from gateway.credentials.jwt import MAX_TOKEN_BYTES, InvalidToken, JwtVerifier

ISSUER = "http://issuer.example"
AUDIENCE = "gateway"
SECRET = "s" * 16 + "0123456789abcdef"  # 32 bytes: the least HS256 accepts
JWKS_URL = "http://issuer.example/.well-known/jwks.json"

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_KEY_2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_P256 = ec.generate_private_key(ec.SECP256R1())
EC_P384 = ec.generate_private_key(ec.SECP384R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str | None, **members: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return _jwk(jwk, kid, members)


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str | None, **members: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return _jwk(jwk, kid, members)


def ed_jwk(key: ed25519.Ed25519PrivateKey, kid: str | None, **members: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return _jwk(jwk, kid, members)


def _jwk(jwk: dict[str, Any], kid: str | None, members: dict[str, Any]) -> dict[str, Any]:
    jwk.pop("alg", None)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(members)
    return jwk


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "role": ["member"],
        "tenant_id": "acme",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    key: Any = SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    **overrides: Any,
) -> str:
    return jwt.encode(claims(**overrides), key, algorithm=algorithm, headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """An HMAC-signed token built byte by byte, for headers PyJWT will not write."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def settings(**overrides: Any) -> JwtSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "algorithms": ("HS256",),
        "secret": SECRET,
        "leeway": 0,
        "roles_claim": "role",
    }
    values.update(overrides)
    return JwtSettings(**values)


def reason_of(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    return caught.value.reason


class Clock:
    """Monotonic time that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Issuer:
    """The JWKS endpoint: serves `keys` (or fails as told) and records every request."""

    def __init__(self, *keys: dict[str, Any]) -> None:
        self.keys = list(keys)
        self.failure: Callable[[httpx.Request], httpx.Response] | None = None
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.failure is not None:
            return self.failure(request)
        return httpx.Response(200, json={"keys": self.keys})

    def refuse(self) -> None:
        def refused(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("connection refused", request=request)

        self.failure = refused

    def answer(self, status: int, body: bytes = b"") -> None:
        self.failure = lambda request: httpx.Response(status, content=body)

    def heal(self) -> None:
        self.failure = None


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer() -> Issuer:
    return Issuer(rsa_jwk(RSA_KEY, "k1"))


JwksFactory = Callable[..., JwksKeys]


@pytest.fixture
def make_jwks(issuer: Issuer, clock: Clock) -> Iterator[JwksFactory]:
    made: list[JwksKeys] = []

    def make(
        algorithms: tuple[str, ...] = ("RS256",),
        cache_seconds: float = 300,
        cooldown_seconds: float = 30,
    ) -> JwksKeys:
        keys = JwksKeys(
            JWKS_URL,
            algorithms=algorithms,
            cache_seconds=cache_seconds,
            cooldown_seconds=cooldown_seconds,
            timeout=1.0,
            client=httpx.Client(transport=httpx.MockTransport(issuer.handle)),
            clock=clock,
        )
        made.append(keys)
        return keys

    yield make
    for keys in made:
        keys.close()


# --- JwtVerifier: HS256 shared secret --------------------------------------------------------


@pytest.fixture
def hs_verifier() -> Iterator[JwtVerifier]:
    verifier = JwtVerifier(settings())
    yield verifier
    verifier.close()


def test_hs256_token_gives_the_identity_it_proves(hs_verifier: JwtVerifier) -> None:
    identity = hs_verifier.verify(mint(role=["admin", "member"], tenant_id="acme"))
    assert identity == Identity(
        method="jwt", subject="user-1", roles=("admin", "member"), tenant_id="acme"
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: mint(key="x" * 32 + "other-secret"), "signature"),
        (lambda: mint(exp=int(time.time()) - 5), "expired"),
        (lambda: mint(nbf=int(time.time()) + 120), "not_yet_valid"),
        (lambda: mint(iss="http://issuer.example.evil"), "issuer"),
        (lambda: mint(iss="http://issuer.exampl"), "issuer"),
        (lambda: mint(aud="another-service"), "audience"),
        (lambda: mint(sub=None), "missing_claim"),
        (lambda: mint(exp=None), "missing_claim"),
        (lambda: mint(iss=None), "missing_claim"),
        (lambda: mint(aud=None), "missing_claim"),
        (lambda: mint(key=SECRET * 2, algorithm="HS384"), "algorithm"),
        (lambda: jwt.encode(claims(), None, algorithm="none") + "sig", "algorithm"),
        (lambda: mint(headers={"typ": "refresh+jwt"}), "not_access_token"),
        (lambda: mint(token_use="refresh"), "not_access_token"),
        (lambda: mint(typ="id"), "not_access_token"),
        (lambda: mint(role=["admin,root"]), "claims"),
        (lambda: mint(sub="user\r\nX-Admin: 1"), "claims"),
        (lambda: "not-a-token", "malformed"),
        (lambda: "a.b.c.d.e", "malformed"),
        (lambda: mint() + "=", "malformed"),
        (lambda: "e30.e30.", "malformed"),
    ],
    ids=[
        "wrong-secret",
        "expired",
        "not-yet-valid",
        "issuer-with-suffix",
        "issuer-prefix",
        "audience",
        "no-sub",
        "no-exp",
        "no-iss",
        "no-aud",
        "alg-not-configured",
        "alg-none",
        "typ-refresh",
        "token-use-refresh",
        "typ-claim-id",
        "comma-in-role",
        "crlf-in-sub",
        "garbage",
        "five-parts",
        "padding",
        "empty-signature",
    ],
)
def test_hs256_refusals_name_their_reason(
    hs_verifier: JwtVerifier, token: Callable[[], str], reason: str
) -> None:
    assert reason_of(hs_verifier, token()) == reason


def test_crit_header_is_refused_because_no_extension_is_understood(
    hs_verifier: JwtVerifier,
) -> None:
    b64_crit = hand_made({"alg": "HS256", "crit": ["b64"], "b64": True}, claims(), SECRET.encode())
    assert reason_of(hs_verifier, b64_crit) == "crit"
    unknown = hand_made({"alg": "HS256", "crit": ["x-ext"], "x-ext": 1}, claims(), SECRET.encode())
    with pytest.raises(InvalidToken):
        hs_verifier.verify(unknown)


def test_access_token_media_types_are_accepted(hs_verifier: JwtVerifier) -> None:
    for typ in ("JWT", "at+jwt", "application/at+jwt"):
        assert hs_verifier.verify(mint(headers={"typ": typ})).subject == "user-1"


def test_oversized_token_is_refused_before_any_parsing(hs_verifier: JwtVerifier) -> None:
    assert reason_of(hs_verifier, "a" * (MAX_TOKEN_BYTES + 1)) == "too_large"


def test_leeway_admits_a_token_just_expired() -> None:
    verifier = JwtVerifier(settings(leeway=30))
    token = mint(exp=int(time.time()) - 10)
    assert verifier.verify(token).subject == "user-1"
    assert reason_of(verifier, mint(exp=int(time.time()) - 60)) == "expired"


def test_jku_and_x5u_in_a_token_are_never_fetched(make_jwks: JwksFactory, issuer: Issuer) -> None:
    verifier = JwtVerifier(settings(algorithms=("RS256",), secret=None, jwks_url=JWKS_URL))
    assert verifier.jwks is not None
    verifier.jwks.close()
    verifier.jwks = make_jwks()
    headers = {"kid": "k1", "jku": "http://evil.example/jwks", "x5u": "http://evil.example/c"}
    assert verifier.verify(mint(RSA_KEY, "RS256", headers=headers)).subject == "user-1"
    assert [str(r.url) for r in issuer.requests] == [JWKS_URL]


# --- JwtVerifier: RS256 public key file ------------------------------------------------------


@pytest.fixture
def pem_file(tmp_path: Path) -> Path:
    path = tmp_path / "issuer.pem"
    path.write_bytes(
        RSA_KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return path


def test_rs256_with_a_public_key_file(pem_file: Path) -> None:
    verifier = JwtVerifier(
        settings(algorithms=("RS256", "PS256"), secret=None, public_key_file=str(pem_file))
    )
    assert verifier.verify(mint(RSA_KEY, "RS256")).subject == "user-1"
    assert verifier.verify(mint(RSA_KEY, "PS256", sub="user-2")).subject == "user-2"
    assert reason_of(verifier, mint(RSA_KEY_2, "RS256")) == "signature"
    assert reason_of(verifier, mint(RSA_KEY, "RS512")) == "algorithm"


def test_hmac_token_keyed_with_the_public_key_is_refused(pem_file: Path) -> None:
    """Algorithm confusion (RFC 8725 §2.1): the PEM as an HS256 secret proves nothing."""
    verifier = JwtVerifier(
        settings(algorithms=("RS256",), secret=None, public_key_file=str(pem_file))
    )
    token = hand_made({"alg": "HS256", "typ": "JWT"}, claims(), pem_file.read_bytes())
    assert reason_of(verifier, token) == "algorithm"


# --- JwksKeys: cache, cooldown, fallback ------------------------------------------------------


def test_keys_are_fetched_once_and_served_from_the_cache(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cache_seconds=300, cooldown_seconds=30)
    for _ in range(5):
        assert keys.key_for("k1", "RS256") is not None
        clock.advance(10)
    assert keys.fetches == 1
    assert [str(r.url) for r in issuer.requests] == [JWKS_URL]


def test_keys_are_fetched_again_after_the_cache_time(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cache_seconds=60, cooldown_seconds=5)
    assert keys.key_for("k1", "RS256") is not None
    clock.advance(61)
    issuer.keys = [rsa_jwk(RSA_KEY_2, "k2")]
    assert keys.key_for("k2", "RS256") is not None
    assert keys.fetches == 2
    # k1 left the issuer's set: it is gone once the set is fetched again.
    assert keys.key_for("k1", "RS256") is None


def test_no_refetch_within_the_cooldown_even_when_the_cache_expired(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cache_seconds=10, cooldown_seconds=30)
    assert keys.key_for("k1", "RS256") is not None
    clock.advance(11)  # cache expired, cooldown not over: the last good keys serve
    assert keys.key_for("k1", "RS256") is not None
    assert keys.fetches == 1
    clock.advance(20)
    assert keys.key_for("k1", "RS256") is not None
    assert keys.fetches == 2


def test_failed_fetch_keeps_the_last_good_keys(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cache_seconds=10, cooldown_seconds=5)
    assert keys.key_for("k1", "RS256") is not None
    for fail in (issuer.refuse, lambda: issuer.answer(500), lambda: issuer.answer(200, b"{")):
        fail()
        clock.advance(11)
        assert keys.key_for("k1", "RS256") is not None
    assert keys.fetches == 4


def test_no_keys_at_all_raises_keys_unavailable_with_retry_after(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cooldown_seconds=30)
    issuer.refuse()
    with pytest.raises(KeysUnavailable) as caught:
        keys.key_for("k1", "RS256")
    assert caught.value.retry_after == 30
    clock.advance(10.5)
    with pytest.raises(KeysUnavailable) as caught:
        keys.key_for("k1", "RS256")
    assert caught.value.retry_after == 20  # whole seconds, rounded up
    assert keys.fetches == 1  # asked again only after the cooldown
    issuer.heal()
    clock.advance(20)
    assert keys.key_for("k1", "RS256") is not None
    assert keys.fetches == 2


def test_retry_after_is_at_least_one_second(make_jwks: JwksFactory, issuer: Issuer) -> None:
    keys = make_jwks(cooldown_seconds=0)
    issuer.answer(503)
    with pytest.raises(KeysUnavailable) as caught:
        keys.key_for("k1", "RS256")
    assert caught.value.retry_after == 1


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'["keys"]',
        b'{"keys": {"kid": "k1"}}',
        b'{"no_keys": []}',
        b'{"keys": [' + b'{"kty": "RSA", "n": "AQAB", "e": "AQAB"},' * 25000 + b"{}]}",
    ],
    ids=["not-json", "a-list", "keys-not-a-list", "no-keys-member", "over-1-mib"],
)
def test_documents_that_are_not_a_usable_key_set_are_failures(
    make_jwks: JwksFactory, issuer: Issuer, body: bytes
) -> None:
    keys = make_jwks()
    issuer.answer(200, body)
    with pytest.raises(KeysUnavailable):
        keys.key_for("k1", "RS256")


# --- JwksKeys: kid handling ------------------------------------------------------------------


def test_unknown_kid_refetches_at_most_once_per_cooldown(
    make_jwks: JwksFactory, issuer: Issuer, clock: Clock
) -> None:
    keys = make_jwks(cache_seconds=300, cooldown_seconds=30)
    assert keys.key_for("k1", "RS256") is not None
    # A storm of random kids right after a fetch: nobody asks the issuer again.
    for index in range(50):
        assert keys.key_for(f"random-{index}", "RS256") is None
    assert keys.fetches == 1
    # The issuer rotates; after the cooldown one unknown kid triggers one refetch.
    issuer.keys.append(rsa_jwk(RSA_KEY_2, "k2"))
    clock.advance(31)
    assert keys.key_for("k2", "RS256") is not None
    assert keys.fetches == 2
    for index in range(50):
        assert keys.key_for(f"again-{index}", "RS256") is None
    assert keys.fetches == 2
    # Known kids keep working throughout, from the cache.
    assert keys.key_for("k1", "RS256") is not None
    assert keys.fetches == 2


def test_keys_for_encryption_are_ignored(make_jwks: JwksFactory, issuer: Issuer) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "enc", use="enc"), rsa_jwk(RSA_KEY_2, "sig", use="sig")]
    keys = make_jwks()
    assert keys.key_for("enc", "RS256") is None
    assert keys.key_for("sig", "RS256") is not None


def test_only_encryption_keys_is_no_key_set(make_jwks: JwksFactory, issuer: Issuer) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "enc", use="enc")]
    with pytest.raises(KeysUnavailable):
        make_jwks().key_for("enc", "RS256")


def test_keys_of_the_wrong_family_are_ignored(make_jwks: JwksFactory, issuer: Issuer) -> None:
    issuer.keys = [
        ec_jwk(EC_P256, "ec"),
        ed_jwk(ED_KEY, "ed"),
        {"kty": "oct", "k": b64(SECRET.encode()), "kid": "oct"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kid": "no-kty"},
        rsa_jwk(RSA_KEY, "rsa"),
    ]
    keys = make_jwks(algorithms=("RS256",))
    assert keys.key_for("rsa", "RS256") is not None
    for kid in ("ec", "ed", "oct", "broken", "no-kty"):
        assert keys.key_for(kid, "RS256") is None, kid
    # An RSA key never verifies an EC algorithm, whatever the token says.
    assert keys.key_for("rsa", "ES256") is None


def test_ec_key_on_the_wrong_curve_is_ignored(make_jwks: JwksFactory, issuer: Issuer) -> None:
    issuer.keys = [ec_jwk(EC_P384, "p384"), ec_jwk(EC_P256, "p256")]
    keys = make_jwks(algorithms=("ES256",))
    assert keys.key_for("p256", "ES256") is not None
    assert keys.key_for("p384", "ES256") is None


def test_key_whose_own_alg_differs_from_the_token_is_not_used(
    make_jwks: JwksFactory, issuer: Issuer
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1", alg="RS512")]
    keys = make_jwks(algorithms=("RS256", "RS512"))
    assert keys.key_for("k1", "RS256") is None
    assert keys.key_for("k1", "RS512") is not None


def test_token_without_kid_uses_the_only_key(make_jwks: JwksFactory, issuer: Issuer) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, None)]
    assert make_jwks().key_for(None, "RS256") is not None


def test_token_without_kid_is_refused_when_two_keys_could_verify_it(
    make_jwks: JwksFactory, issuer: Issuer
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1"), rsa_jwk(RSA_KEY_2, "k2")]
    keys = make_jwks()
    assert keys.key_for(None, "RS256") is None
    assert keys.key_for("k2", "RS256") is not None


def test_token_without_kid_with_one_key_of_its_family(
    make_jwks: JwksFactory, issuer: Issuer
) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, "k1"), ec_jwk(EC_P256, "k2")]
    keys = make_jwks(algorithms=("RS256", "ES256"))
    found = keys.key_for(None, "ES256")
    assert found is not None
    assert found.jwk.key_id == "k2"


# --- JwtVerifier over JWKS --------------------------------------------------------------------


@pytest.fixture
def jwks_verifier(make_jwks: JwksFactory) -> Callable[..., JwtVerifier]:
    def make(algorithms: tuple[str, ...] = ("RS256",), **overrides: Any) -> JwtVerifier:
        verifier = JwtVerifier(
            settings(algorithms=algorithms, secret=None, jwks_url=JWKS_URL, **overrides)
        )
        assert verifier.jwks is not None
        verifier.jwks.close()
        verifier.jwks = make_jwks(algorithms=algorithms)
        return verifier

    return make


def test_rs256_over_jwks(jwks_verifier: Callable[..., JwtVerifier], issuer: Issuer) -> None:
    verifier = jwks_verifier()
    assert verifier.verify(mint(RSA_KEY, "RS256", headers={"kid": "k1"})).subject == "user-1"
    assert reason_of(verifier, mint(RSA_KEY_2, "RS256", headers={"kid": "k1"})) == "signature"
    assert reason_of(verifier, mint(RSA_KEY, "RS256", headers={"kid": "nope"})) == "unknown_kid"


def test_no_kid_token_over_jwks(jwks_verifier: Callable[..., JwtVerifier], issuer: Issuer) -> None:
    issuer.keys = [rsa_jwk(RSA_KEY, None)]
    assert jwks_verifier().verify(mint(RSA_KEY, "RS256")).subject == "user-1"
    issuer.keys = [rsa_jwk(RSA_KEY, None), rsa_jwk(RSA_KEY_2, None)]
    assert reason_of(jwks_verifier(), mint(RSA_KEY, "RS256")) == "unknown_kid"


@pytest.mark.parametrize("algorithm", ["RS256", "RS384", "RS512", "PS256"])
def test_rsa_jwk_without_alg_verifies_every_configured_rsa_algorithm(
    jwks_verifier: Callable[..., JwtVerifier], issuer: Issuer, algorithm: str
) -> None:
    """`alg` is optional in a JWK (RFC 7517 §4.4): the configured list decides."""
    issuer.keys = [rsa_jwk(RSA_KEY, "k1")]
    verifier = jwks_verifier(algorithms=("RS256", "RS384", "RS512", "PS256"))
    token = mint(RSA_KEY, algorithm, headers={"kid": "k1"})
    assert verifier.verify(token).subject == "user-1"


@pytest.mark.parametrize(
    ("key", "jwk", "algorithm"),
    [(EC_P256, ec_jwk(EC_P256, "k1"), "ES256"), (ED_KEY, ed_jwk(ED_KEY, "k1"), "EdDSA")],
)
def test_ec_and_eddsa_over_jwks(
    jwks_verifier: Callable[..., JwtVerifier],
    issuer: Issuer,
    key: Any,
    jwk: dict[str, Any],
    algorithm: str,
) -> None:
    issuer.keys = [jwk]
    verifier = jwks_verifier(algorithms=(algorithm,))
    assert verifier.verify(mint(key, algorithm, headers={"kid": "k1"})).subject == "user-1"


def test_keys_unavailable_reaches_the_caller(
    jwks_verifier: Callable[..., JwtVerifier], issuer: Issuer
) -> None:
    issuer.refuse()
    with pytest.raises(KeysUnavailable):
        jwks_verifier().verify(mint(RSA_KEY, "RS256", headers={"kid": "k1"}))


# --- the verified-token cache ----------------------------------------------------------------


def count_verifications(monkeypatch: pytest.MonkeyPatch, verifier: JwtVerifier) -> list[str]:
    seen: list[str] = []
    real = verifier._verified_claims

    def counting(token: str) -> dict[str, Any]:
        seen.append(token)
        return real(token)

    monkeypatch.setattr(verifier, "_verified_claims", counting)
    return seen


def fake_wall_clock(monkeypatch: pytest.MonkeyPatch, start: float) -> SimpleNamespace:
    """time.time() as the verifier module sees it (PyJWT keeps the real clock)."""
    fake = SimpleNamespace(time=lambda: fake.now, now=start)
    monkeypatch.setattr(jwt_module, "time", fake)
    return fake


def test_a_verified_token_is_remembered(
    monkeypatch: pytest.MonkeyPatch, hs_verifier: JwtVerifier
) -> None:
    seen = count_verifications(monkeypatch, hs_verifier)
    token = mint()
    first = hs_verifier.verify(token)
    for _ in range(3):
        assert hs_verifier.verify(token) == first
    assert len(seen) == 1
    hs_verifier.verify(mint(sub="user-2"))
    assert len(seen) == 2


def test_a_remembered_token_is_checked_again_from_its_exp(
    monkeypatch: pytest.MonkeyPatch, hs_verifier: JwtVerifier
) -> None:
    seen = count_verifications(monkeypatch, hs_verifier)
    exp = int(time.time()) + 300
    token = mint(exp=exp)
    wall = fake_wall_clock(monkeypatch, exp - 1)
    hs_verifier.verify(token)
    hs_verifier.verify(token)
    assert len(seen) == 1
    wall.now = exp  # at exp the cache no longer vouches for the token
    hs_verifier.verify(token)
    assert len(seen) == 2


def test_a_remembered_token_is_refused_once_expired() -> None:
    verifier = JwtVerifier(settings(leeway=0))
    exp = int(time.time()) + 1
    token = mint(exp=exp)
    assert verifier.verify(token).subject == "user-1"
    ends = time.monotonic() + 3
    while time.time() < exp + 0.05 and time.monotonic() < ends:
        time.sleep(0.05)
    assert reason_of(verifier, token) == "expired"


def test_refused_tokens_are_not_remembered(
    monkeypatch: pytest.MonkeyPatch, hs_verifier: JwtVerifier
) -> None:
    seen = count_verifications(monkeypatch, hs_verifier)
    token = mint(aud="someone-else")
    for _ in range(3):
        assert reason_of(hs_verifier, token) == "audience"
    assert len(seen) == 3


def test_the_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = JwtVerifier(settings(verified_token_cache=0))
    seen = count_verifications(monkeypatch, verifier)
    token = mint()
    for _ in range(3):
        verifier.verify(token)
    assert len(seen) == 3


def test_already_verified_vouches_only_for_remembered_unexpired_tokens(
    monkeypatch: pytest.MonkeyPatch, hs_verifier: JwtVerifier
) -> None:
    seen = count_verifications(monkeypatch, hs_verifier)
    exp = int(time.time()) + 300
    token = mint(exp=exp)
    assert hs_verifier.already_verified(token) is None  # it never verifies by itself
    assert seen == []
    identity = hs_verifier.verify(token)
    assert hs_verifier.already_verified(token) == identity
    assert hs_verifier.already_verified(mint(sub="user-2")) is None
    assert hs_verifier.already_verified(token + "x") is None
    for odd in ("", "x" * (MAX_TOKEN_BYTES + 1), "t\u00f6ken.a.b"):
        assert hs_verifier.already_verified(odd) is None
    wall = fake_wall_clock(monkeypatch, exp - 1)
    assert hs_verifier.already_verified(token) == identity
    wall.now = exp  # never past exp, as verify()
    assert hs_verifier.already_verified(token) is None
    assert len(seen) == 1


def test_already_verified_knows_nothing_with_the_cache_off() -> None:
    verifier = JwtVerifier(settings(verified_token_cache=0))
    token = mint()
    verifier.verify(token)
    assert verifier.already_verified(token) is None


# --- ApiKeyRing ------------------------------------------------------------------------------


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def ring() -> ApiKeyRing:
    return ApiKeyRing(
        ApiKeySettings(
            header="X-API-Key",
            keys=(
                ApiKey("reporting", digest("demo-service-key"), ("service",)),
                ApiKey("billing", digest("billing-key").upper(), ("billing", "service")),
            ),
        )
    )


def test_api_key_is_found_by_its_digest(ring: ApiKeyRing) -> None:
    found = ring.lookup("demo-service-key")
    assert found is not None
    assert (found.id, found.roles) == ("reporting", ("service",))
    upper = ring.lookup("billing-key")  # digests match whatever their hex case
    assert upper is not None and upper.id == "billing"
    assert ring.header == "X-API-Key"


@pytest.mark.parametrize(
    "presented",
    [
        "",
        "demo-service-key ",
        "DEMO-SERVICE-KEY",
        digest("demo-service-key"),
        "x" * (MAX_KEY_CHARS + 1),
        "demo-service-key\udcff",
        "\u00e9\u00e8",
    ],
)
def test_anything_but_the_exact_key_is_unknown(ring: ApiKeyRing, presented: str) -> None:
    assert ring.lookup(presented) is None


def test_long_but_allowed_key_is_looked_up() -> None:
    key = "k" * MAX_KEY_CHARS
    ring = ApiKeyRing(ApiKeySettings(keys=(ApiKey("long", digest(key)),)))
    found = ring.lookup(key)
    assert found is not None and found.id == "long"


# --- identity_from_claims --------------------------------------------------------------------


def test_identity_from_claims() -> None:
    identity = identity_from_claims(
        {"sub": "user-1", "role": ["admin", "member"], "tenant_id": "acme"}, "role"
    )
    assert identity == Identity(
        method="jwt", subject="user-1", roles=("admin", "member"), tenant_id="acme"
    )
    assert identity.rate_limit_key == "user:user-1"
    assert identity.upstream_headers() == {
        "X-Auth-Method": "jwt",
        "X-User-Roles": "admin,member",
        "X-User-Id": "user-1",
        "X-Tenant-Id": "acme",
    }


def test_api_key_identity_headers() -> None:
    identity = Identity(method="api_key", consumer_id="reporting", roles=("service",))
    assert identity.rate_limit_key == "key:reporting"
    assert identity.upstream_headers() == {
        "X-Auth-Method": "api_key",
        "X-User-Roles": "service",
        "X-Consumer-Id": "reporting",
    }


@pytest.mark.parametrize(
    ("claims_", "roles_claim", "roles"),
    [
        ({"role": "admin"}, "role", ("admin",)),
        ({"role": ["admin", "member", "admin"]}, "role", ("admin", "member")),
        ({"role": ["admin", 7, None, {"x": 1}]}, "role", ("admin",)),
        ({"role": 7}, "role", ()),
        ({"role": {"admin": True}}, "role", ()),
        ({}, "role", ()),
        (
            {"realm_access": {"roles": ["admin", "member"]}},
            "realm_access.roles",
            ("admin", "member"),
        ),
        ({"realm_access": {"roles": "admin"}}, "realm_access.roles", ("admin",)),
        ({"realm_access": ["roles"]}, "realm_access.roles", ()),
        ({"realm_access": {}}, "realm_access.roles", ()),
        ({"realm_access.roles": ["admin"]}, "realm_access.roles", ("admin",)),
        (
            {"realm_access.roles": ["named"], "realm_access": {"roles": ["nested"]}},
            "realm_access.roles",
            ("named",),
        ),
        ({"https://example.com/roles": ["admin"]}, "https://example.com/roles", ("admin",)),
        ({"a": {"b": {"c": ["deep"]}}}, "a.b.c", ("deep",)),
    ],
)
def test_roles_claim_is_a_dotted_path_to_a_string_or_a_list(
    claims_: dict[str, Any], roles_claim: str, roles: tuple[str, ...]
) -> None:
    assert identity_from_claims({"sub": "u", **claims_}, roles_claim).roles == roles


@pytest.mark.parametrize(
    "claims_",
    [
        {"sub": "u", "role": ["admin,root"]},
        {"sub": "u", "role": "member,admin"},
        {"sub": "u", "role": ["admin", "evil\r\nX-User-Id: root"]},
        {"sub": "u", "role": ["ad\x00min"]},
        {"sub": "u", "role": ["tab\there"]},
        {"sub": "u", "role": ["del\x7f"]},
        {"sub": "u\r\nX-Auth-Method: api_key"},
        {"sub": "u\n"},
        {"sub": "u", "tenant_id": "t\r1"},
        {"sub": ""},
        {"sub": "u" * 257},
        {"sub": 42},
        {"role": ["admin"]},
    ],
)
def test_claims_that_cannot_travel_in_a_header_are_refused(claims_: dict[str, Any]) -> None:
    with pytest.raises(UnusableClaim):
        identity_from_claims(claims_, "role")


@pytest.mark.parametrize(
    "claims_",
    [
        {"sub": "jos\u00e9"},
        {"sub": "u", "role": ["r\u00f4le"]},
        {"sub": "u", "tenant_id": "t\u2028x"},
        {"sub": "u", "role": ["next\x85line"]},
    ],
)
def test_claims_beyond_ascii_are_refused_not_forwarded(claims_: dict[str, Any]) -> None:
    """A header value carries bytes; a claim that is not ASCII cannot travel unchanged."""
    with pytest.raises(UnusableClaim):
        identity_from_claims(claims_, "role")


@pytest.mark.parametrize(
    "role",
    [" admin", "admin ", "ad min", " "],
    ids=["leading", "trailing", "inner", "blank"],
)
@pytest.mark.parametrize("shape", ["list", "string"])
def test_a_role_that_is_empty_or_holds_whitespace_refuses_the_claim(role: str, shape: str) -> None:
    # Roles are compared exactly everywhere: " admin" must never turn into admin, so it
    # is refused, not trimmed, and with it the whole claim (as a comma is).
    value: Any = ["member", role] if shape == "list" else role
    with pytest.raises(UnusableClaim):
        roles_from(value)
    with pytest.raises(UnusableClaim):
        identity_from_claims({"sub": "u", "role": value}, "role")
    with pytest.raises(UnusableClaim):
        roles_from(["member", ""])
    assert roles_from(["member", "admin"]) == ("member", "admin")


def test_a_token_whose_role_holds_a_space_is_refused(hs_verifier: JwtVerifier) -> None:
    assert reason_of(hs_verifier, mint(role=["member", " admin"])) == "claims"


def test_tenant_id_number_becomes_text_and_other_types_are_dropped() -> None:
    assert identity_from_claims({"sub": "u", "tenant_id": 42}, "role").tenant_id == "42"
    assert identity_from_claims({"sub": "u", "tenant_id": True}, "role").tenant_id is None
    assert identity_from_claims({"sub": "u", "tenant_id": ["a"]}, "role").tenant_id is None


def test_helpers() -> None:
    assert claim_at({"a": {"b": 1}}, "a.b") == 1
    assert claim_at({"a": 1}, "a.b") is None
    assert roles_from(None) == ()
    assert header_safe("ok value", "x") == "ok value"
    with pytest.raises(UnusableClaim):
        header_safe("x" * 257, "x")


def test_a_cold_worker_waits_for_the_first_fetch_instead_of_answering_503(
    make_jwks: JwksFactory, issuer: Issuer
) -> None:
    # Requests arriving while the very first fetch is under way must wait for it: with
    # no keys yet, "cooling down" is no reason to refuse.
    answered = threading.Event()
    original = issuer.handle

    def slow(request: httpx.Request) -> httpx.Response:
        answered.wait(0.3)
        return original(request)

    keys = JwksKeys(
        JWKS_URL,
        algorithms=("RS256",),
        cache_seconds=300,
        cooldown_seconds=30,
        timeout=2.0,
        client=httpx.Client(transport=httpx.MockTransport(slow)),
    )
    results: list[object] = []

    def lookup() -> None:
        try:
            results.append(keys.key_for("k1", "RS256"))
        except KeysUnavailable as exc:
            results.append(exc)

    threads = [threading.Thread(target=lookup) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)
    keys.close()
    assert len(results) == 6
    assert not [r for r in results if isinstance(r, KeysUnavailable)]
    assert all(r is not None for r in results)
    assert keys.fetches == 1
