"""Password hashing: salted scrypt, self-describing, constant-time checks."""

from __future__ import annotations

from upstream_stub.passwords import hash_password, verify_password


def test_a_hash_verifies_its_password_only() -> None:
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsE", stored)
    assert not verify_password("", stored)


def test_hashes_are_salted_and_self_describing() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    scheme, n, r, p, salt, key = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert "same" not in first
    assert salt != second.split("$")[4]


def test_no_stored_hash_never_matches() -> None:
    assert not verify_password("anything", None)
    assert not verify_password("", None)


def test_malformed_stored_values_never_match() -> None:
    for stored in ["", "plain", "md5$1$2$3$4$5", "scrypt$x$8$1$AAAA$AAAA", "scrypt$16384$8$1$*$*"]:
        assert not verify_password("plain", stored)


def test_unicode_passwords() -> None:
    stored = hash_password("pässwörd-✓")
    assert verify_password("pässwörd-✓", stored)
    assert not verify_password("password-✓", stored)
