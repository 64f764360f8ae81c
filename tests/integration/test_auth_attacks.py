"""Tokens that must never get through: each is a 401 problem with the bearer challenge
(`error="invalid_token"`, since a token was sent), and nothing reaches the upstream.

Every attack runs against real `gateway serve` processes, one per key source: an HS256
secret, an RS256 public key file, and a JWKS URL served from this process.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import jwt
import pytest

from .jwt_support import (
    DROP,
    ISSUER,
    LEEWAY,
    AuthStack,
    JwksServer,
    Target,
    assert_unauthorized,
    b64json,
    b64url,
    bearer,
    hand_made,
    hmac_sha256,
    public_jwk,
    public_pem,
    rsa_key,
)
from .support import Gateway, Reply
from .upstream import MisbehavingUpstream

pytestmark = pytest.mark.integration

ALL = ("hs256", "pem", "jwks")
RSA = ("pem", "jwks")
ATTACKER_SECRET = secrets.token_bytes(48)
ATTACKER_KID = "attacker-key"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, upstream: MisbehavingUpstream
) -> Iterator[AuthStack]:
    stack = AuthStack(lambda name: tmp_path_factory.mktemp(name), upstream.url)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="module")
def canary() -> Iterator[JwksServer]:
    """Another key server on loopback, serving the attacker's key: must never be asked."""
    server = JwksServer([public_jwk(rsa_key("attacker"), ATTACKER_KID)]).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Env:
    canary: JwksServer
    marker: str


def _now() -> int:
    return int(time.time())


def _attacker(t: Target, *, kid: object = ATTACKER_KID, headers: dict | None = None) -> str:
    """Signed with a key the gateway does not know, of the family it accepts."""
    key = ATTACKER_SECRET if t.symmetric else rsa_key("attacker")
    header = {"alg": t.algorithm, "typ": "JWT", "kid": kid, **(headers or {})}
    return t.forge(header, t.claims(), key=key)


def _header(t: Target, **extra: object) -> dict[str, object]:
    return {"alg": t.algorithm, "typ": "JWT", **({"kid": t.kid} if t.kid else {}), **extra}


def _own(t: Target, **claims: object) -> str:
    """Signed by the gateway's own key, with claims PyJWT would refuse to encode."""
    return t.forge(_header(t), t.claims(**claims))


def _flip_signature(token: str) -> str:
    head, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{head}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _signed_raw_payload(t: Target, payload: bytes) -> str:
    """A correctly signed JWS whose payload is not a JSON object."""
    headers = {"kid": t.kid} if t.kid else None
    return jwt.api_jws.encode(payload, t.key, algorithm=t.algorithm, headers=headers)


def _hs256_keyed_with_jwk(t: Target, env: Env) -> str:
    jwk_text = json.dumps(public_jwk(t.key, t.kid or "k")).encode()
    return hand_made(
        {"alg": "HS256", "typ": "JWT", "kid": t.kid}, t.claims(), hmac_sha256(jwk_text)
    )


Attack = Callable[[Target, Env], str]
ATTACKS: dict[str, tuple[tuple[str, ...], Attack]] = {
    # -- algorithm confusion
    "alg_none_unsigned": (
        ALL,
        lambda t, e: hand_made({"alg": "none", "typ": "JWT"}, t.claims(), None),
    ),
    "alg_none_with_signature": (
        ALL,
        lambda t, e: hand_made({"alg": "none"}, t.claims(), hmac_sha256(b"x")),
    ),
    "alg_None_capitalised": (
        ALL,
        lambda t, e: hand_made({"alg": "None", "typ": "JWT"}, t.claims(), None) + "AA",
    ),
    "hs256_keyed_with_the_public_key_pem": (
        RSA,
        lambda t, e: hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": t.kid},
            t.claims(),
            hmac_sha256(public_pem(t.key)),
        ),
    ),
    "hs256_keyed_with_the_public_key_jwk": (RSA, _hs256_keyed_with_jwk),
    "alg_of_the_same_family_not_listed": (
        ALL,
        lambda t, e: t.forge(
            _header(t, alg="HS512" if t.symmetric else "RS512"),
            t.claims(),
            algorithm="HS512" if t.symmetric else "RS512",
        ),
    ),
    "ps256_with_the_real_key_not_listed": (RSA, lambda t, e: t.mint(algorithm="PS256")),
    "rs256_against_an_hs256_gateway": (
        ("hs256",),
        lambda t, e: t.mint(algorithm="RS256", key=rsa_key("attacker")),
    ),
    # -- time and audience claims
    "missing_exp": (ALL, lambda t, e: _own(t, exp=DROP)),
    "expired_beyond_leeway": (ALL, lambda t, e: _own(t, exp=_now() - LEEWAY - 60)),
    "exp_not_a_number": (ALL, lambda t, e: _own(t, exp="9999999999")),
    "nbf_in_the_future": (ALL, lambda t, e: _own(t, nbf=_now() + LEEWAY + 60)),
    "iat_in_the_future": (ALL, lambda t, e: _own(t, iat=_now() + LEEWAY + 60)),
    "wrong_aud": (ALL, lambda t, e: _own(t, aud="another-service")),
    "missing_aud": (ALL, lambda t, e: _own(t, aud=DROP)),
    # -- issuer: exact match only, never a prefix or a containment
    "issuer_with_suffix": (ALL, lambda t, e: _own(t, iss=ISSUER + ".evil")),
    "issuer_truncated": (ALL, lambda t, e: _own(t, iss=ISSUER[:-1])),
    "issuer_with_trailing_slash": (ALL, lambda t, e: _own(t, iss=ISSUER + "/")),
    "issuer_as_a_list": (ALL, lambda t, e: _own(t, iss=[ISSUER])),
    "missing_iss": (ALL, lambda t, e: _own(t, iss=DROP)),
    # -- header extensions and key references the gateway must not follow
    "crit_header": (
        ALL,
        lambda t, e: t.forge(
            _header(t, crit=["urn:example:policy"], **{"urn:example:policy": 1}), t.claims()
        ),
    ),
    "kid_path_traversal": (ALL, lambda t, e: _attacker(t, kid="../../../../../../etc/passwd")),
    "kid_dev_null_hs256_empty_key": (
        ALL,
        lambda t, e: hand_made(
            {"alg": "HS256", "typ": "JWT", "kid": "../../../../../../dev/null"},
            t.claims(),
            hmac_sha256(b""),
        ),
    ),
    "kid_url": (ALL, lambda t, e: _attacker(t, kid=f"{e.canary.base_url}/kid/{e.marker}")),
    "kid_sql": (ALL, lambda t, e: _attacker(t, kid="x' UNION SELECT 'secret' --")),
    "kid_sql_tautology": (ALL, lambda t, e: _attacker(t, kid="' OR '1'='1")),
    "kid_10kb": (ALL, lambda t, e: _attacker(t, kid="k" * 10240)),
    "kid_not_a_string": (ALL, lambda t, e: _attacker(t, kid={"$ne": None})),
    "jku_to_another_server": (
        ALL,
        lambda t, e: _attacker(t, headers={"jku": f"{e.canary.base_url}/jku/{e.marker}/jwks"}),
    ),
    "x5u_to_another_server": (
        ALL,
        lambda t, e: _attacker(t, headers={"x5u": f"{e.canary.base_url}/x5u/{e.marker}/c.pem"}),
    ),
    "embedded_jwk": (
        RSA,
        lambda t, e: _attacker(t, headers={"jwk": public_jwk(rsa_key("attacker"), ATTACKER_KID)}),
    ),
    "unknown_kid_signed_by_the_real_key": (("jwks",), lambda t, e: t.mint(kid="not-" + e.marker)),
    # -- not a compact JWS
    "empty": (ALL, lambda t, e: ""),
    "one_part": (ALL, lambda t, e: b64json({"alg": t.algorithm})),
    "two_parts": (ALL, lambda t, e: t.mint().rsplit(".", 1)[0]),
    "two_parts_with_trailing_dot": (ALL, lambda t, e: t.mint().rsplit(".", 1)[0] + "."),
    "five_parts_jwe_shaped": (
        ALL,
        lambda t, e: ".".join(
            [b64json({"alg": "RSA-OAEP", "enc": "A256GCM"})]
            + [b64url(secrets.token_bytes(16)) for _ in range(4)]
        ),
    ),
    "non_base64": (ALL, lambda t, e: "eyJhbGci$$.eyJzdWIi!!.c2ln~~"),
    "header_not_json": (
        ALL,
        lambda t, e: f"{b64url(b'not json')}.{b64json(t.claims())}.{b64url(b'sig')}",
    ),
    "header_a_json_list": (
        ALL,
        lambda t, e: f"{b64json(['alg', t.algorithm])}.{b64json(t.claims())}.{b64url(b'sig')}",
    ),
    "payload_not_json_but_signed": (ALL, lambda t, e: _signed_raw_payload(t, b"not json")),
    "payload_a_json_list_but_signed": (ALL, lambda t, e: _signed_raw_payload(t, b'["a","b"]')),
    "huge_over_8_kib": (ALL, lambda t, e: _own(t, pad="p" * 9000)),
    "large_under_8_kib_bad_signature": (
        ALL,
        lambda t, e: _flip_signature(_own(t, pad="p" * 5000)),
    ),
    # -- signatures
    "wrong_signature": (ALL, lambda t, e: _flip_signature(t.mint())),
    "signature_of_another_token": (
        ALL,
        lambda t, e: t.mint().rsplit(".", 1)[0] + "." + t.mint().rsplit(".", 1)[1],
    ),
    "other_key_same_kid": (ALL, lambda t, e: _attacker(t, kid=t.kid)),
    # -- not access tokens
    "refresh_typ_header": (ALL, lambda t, e: t.forge(_header(t, typ="refresh+jwt"), t.claims())),
    "refresh_token_use_claim": (ALL, lambda t, e: _own(t, token_use="refresh")),
    "refresh_typ_claim": (ALL, lambda t, e: _own(t, typ="Refresh")),
    "id_token_use_claim": (ALL, lambda t, e: _own(t, token_use="id")),
    "id_typ_header": (ALL, lambda t, e: t.forge(_header(t, typ="id+jwt"), t.claims())),
    # -- claims that cannot travel upstream as they are
    "sub_missing": (ALL, lambda t, e: _own(t, sub=DROP)),
    "sub_not_a_string": (ALL, lambda t, e: _own(t, sub=12345)),
    "sub_with_newline": (ALL, lambda t, e: _own(t, sub="alice\nX-User-Roles: admin")),
    "sub_with_nul": (ALL, lambda t, e: _own(t, sub="alice\x00admin")),
    "roles_list_item_with_comma": (ALL, lambda t, e: _own(t, roles=["member,admin"])),
    "roles_string_with_comma": (ALL, lambda t, e: _own(t, roles="member,admin")),
    "tenant_id_with_crlf": (
        ALL,
        lambda t, e: _own(t, tenant_id="t1\r\nX-User-Roles: admin"),
    ),
}

CASES = [
    pytest.param(target, name, id=f"{target}-{name}")
    for name, (targets, _) in ATTACKS.items()
    for target in targets
]


def _send(gateway: Gateway, route: str, marker: str, headers: list[tuple[str, str]]) -> Reply:
    return gateway.get(f"/{route}/probe?m={marker}", headers)


@pytest.mark.parametrize(("target_name", "attack"), CASES)
def test_attack_is_refused_with_invalid_token_and_never_forwarded(
    stack: AuthStack,
    upstream: MisbehavingUpstream,
    canary: JwksServer,
    target_name: str,
    attack: str,
) -> None:
    target = stack.target(target_name)
    marker = "a" + uuid.uuid4().hex[:16]
    token = ATTACKS[attack][1](target, Env(canary, marker))
    # A route taking JWTs only, and one that also takes API keys (none is sent).
    for route in ("jwt", "any-admin"):
        reply = _send(target.gateway, route, marker, [bearer(token)])
        assert_unauthorized(reply, f"/{route}/probe", token_sent=True)
    assert upstream.received(marker) == []
    assert canary.hits_on(marker) == 0, canary.paths


@pytest.mark.parametrize("target_name", ALL)
def test_the_real_key_is_accepted_so_the_matrix_is_meaningful(
    stack: AuthStack, upstream: MisbehavingUpstream, target_name: str
) -> None:
    # Each attack above differs from this token in one respect only.
    target = stack.target(target_name)
    marker = "v" + uuid.uuid4().hex[:16]
    reply = _send(target.gateway, "jwt", marker, [bearer(target.mint())])
    assert reply.status == 200, reply.describe()
    assert len(upstream.received(marker)) == 1


@pytest.mark.parametrize("target_name", ALL)
@pytest.mark.parametrize("route", ["jwt", "jwt-admin", "any", "any-admin", "key"])
def test_no_credentials_is_a_challenge_without_an_error(
    stack: AuthStack, upstream: MisbehavingUpstream, target_name: str, route: str
) -> None:
    target = stack.target(target_name)
    marker = "n" + uuid.uuid4().hex[:16]
    reply = _send(target.gateway, route, marker, [])
    assert_unauthorized(reply, f"/{route}/probe", token_sent=False)
    assert upstream.received(marker) == []


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic dXNlcjpwYXNzd29yZA==",
        'Digest username="admin", realm="gateway", response="00"',
        "Token abc.def.ghi",
        "Bearerabc.def.ghi",
    ],
    ids=["basic", "digest", "token_scheme", "bearer_without_space"],
)
@pytest.mark.parametrize("route", ["jwt", "any"])
def test_other_schemes_are_no_token_at_all(
    stack: AuthStack, upstream: MisbehavingUpstream, authorization: str, route: str
) -> None:
    target = stack.target("pem")
    marker = "s" + uuid.uuid4().hex[:16]
    reply = _send(target.gateway, route, marker, [("Authorization", authorization)])
    assert_unauthorized(reply, f"/{route}/probe", token_sent=False)
    assert upstream.received(marker) == []


def test_basic_credentials_do_not_hide_a_valid_api_key(
    stack: AuthStack, upstream: MisbehavingUpstream
) -> None:
    target = stack.target("pem")
    marker = "b" + uuid.uuid4().hex[:16]
    headers = [
        ("Authorization", "Basic dXNlcjpwYXNzd29yZA=="),
        ("X-API-Key", target.api_keys["reporting"].raw),
    ]
    reply = _send(target.gateway, "any", marker, headers)
    assert reply.status == 200, reply.describe()
    assert upstream.only(marker).header_values("X-Consumer-Id") == ["reporting"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(
    stack: AuthStack, upstream: MisbehavingUpstream, scheme: str
) -> None:
    target = stack.target("pem")
    marker = "c" + uuid.uuid4().hex[:16]
    good = _send(target.gateway, "jwt", marker, [("Authorization", f"{scheme} {target.mint()}")])
    assert good.status == 200, good.describe()
    assert len(upstream.received(marker)) == 1
    expired = target.mint(target.claims(exp=_now() - LEEWAY - 60))
    other = "c" + uuid.uuid4().hex[:16]
    reply = _send(target.gateway, "jwt", other, [("Authorization", f"{scheme} {expired}")])
    assert_unauthorized(reply, "/jwt/probe", token_sent=True)
    assert upstream.received(other) == []
