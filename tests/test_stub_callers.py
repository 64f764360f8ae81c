"""The caller, as the gateway's identity headers describe it."""

from __future__ import annotations

import pytest
from flask import Flask

from upstream_stub.callers import Caller, current_caller
from upstream_stub.problems import Problem

app = Flask("callers_under_test")


def caller(**headers: str) -> Caller:
    with app.test_request_context(
        "/", headers={k.replace("_", "-"): v for k, v in headers.items()}
    ):
        return current_caller()


def test_all_headers_are_read() -> None:
    found = caller(
        X_User_Id="usr_1",
        X_User_Roles="member,admin",
        X_Tenant_Id="acme",
        X_Auth_Method="jwt",
        X_Consumer_Id="reporting",
    )
    assert found == Caller("usr_1", frozenset({"member", "admin"}), "acme", "jwt", "reporting")


def test_roles_are_split_on_commas_exactly_as_the_gateway_compares_them() -> None:
    # No trimming and no case folding; only empty entries are dropped.
    assert caller(X_User_Roles=" a , ,b,").roles == frozenset({" a ", " ", "b"})
    assert caller(X_User_Roles="member,admin").roles == frozenset({"member", "admin"})
    assert caller(X_User_Roles=",,").roles == frozenset()


@pytest.mark.parametrize("roles", [" admin", "admin ", "member, admin", "Admin", "ADMIN"])
def test_a_role_spelled_differently_is_not_that_role(roles: str) -> None:
    found = caller(X_User_Id="u", X_User_Roles=roles, X_Tenant_Id="acme", X_Auth_Method="jwt")
    assert not found.admin


@pytest.mark.parametrize("roles", [" service", "service ", "Service", "reporting, service"])
def test_a_misspelt_service_role_reads_no_other_tenant(roles: str) -> None:
    found = caller(X_User_Roles=roles, X_Auth_Method="api_key", X_Consumer_Id="reporting")
    assert not found.service_key and not found.every_tenant
    assert not found.reads("acme")


def test_no_headers_is_an_anonymous_direct_call_that_reaches_every_tenant() -> None:
    found = caller()
    assert found.anonymous and found.every_tenant
    assert found.reads("globex") and found.writes("globex") and found.reads(None)


def test_a_tenant_header_alone_is_an_identity_confined_to_that_tenant() -> None:
    found = caller(X_Tenant_Id="acme")
    assert not found.anonymous and not found.every_tenant
    assert found.reads("acme") and not found.reads("globex")


@pytest.mark.parametrize("roles", ["admin", "member", "guest", "member,admin", "service"])
def test_token_callers_reach_their_own_tenant_only_whatever_their_roles(roles: str) -> None:
    found = caller(X_User_Id="u", X_User_Roles=roles, X_Tenant_Id="acme", X_Auth_Method="jwt")
    assert not found.every_tenant
    assert found.reads("acme") and found.writes("acme")
    assert not found.reads("globex") and not found.writes("globex")
    assert not found.reads(None) and not found.writes(None)
    found.refuse_read_only()  # a user of a tenant may write in it


@pytest.mark.parametrize("roles", ["admin", "member", "service"])
def test_a_token_without_a_tenant_reaches_nothing(roles: str) -> None:
    found = caller(X_User_Id="u", X_User_Roles=roles, X_Auth_Method="jwt")
    assert not found.every_tenant
    for tenant in ("acme", "globex", "", None):
        assert not found.reads(tenant) and not found.writes(tenant)


def test_the_service_key_reads_every_tenant_and_writes_none() -> None:
    found = caller(X_User_Roles="service", X_Auth_Method="api_key", X_Consumer_Id="reporting")
    assert found.service_key and found.every_tenant
    assert found.reads("acme") and found.reads("globex") and found.reads(None)
    assert not found.writes("acme") and not found.writes(None)
    with pytest.raises(Problem) as refused:
        found.refuse_read_only()
    assert refused.value.status == 403 and refused.value.code == "forbidden"


def test_other_api_keys_reach_no_tenant() -> None:
    found = caller(X_User_Roles="admin", X_Auth_Method="api_key", X_Consumer_Id="ops")
    assert not found.every_tenant and not found.reads("acme") and not found.writes("acme")


def test_blank_headers_count_as_absent() -> None:
    assert caller(X_User_Id="  ").user_id is None
