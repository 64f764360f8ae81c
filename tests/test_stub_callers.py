"""The caller, as the gateway's identity headers describe it."""

from __future__ import annotations

from flask import Flask

from upstream_stub.callers import Caller, current_caller

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


def test_roles_are_split_and_trimmed() -> None:
    assert caller(X_User_Roles=" a , ,b,").roles == frozenset({"a", "b"})


def test_no_headers_is_an_anonymous_direct_call_that_sees_everything() -> None:
    found = caller()
    assert found.anonymous
    assert found.sees_everything


def test_admin_and_service_see_everything_others_do_not() -> None:
    assert caller(X_User_Id="u", X_User_Roles="admin").sees_everything
    assert caller(X_User_Roles="service", X_Auth_Method="api_key").sees_everything
    assert not caller(X_User_Id="u", X_User_Roles="member").sees_everything
    assert not caller(X_User_Id="u").sees_everything
    assert not caller(X_Auth_Method="jwt").sees_everything


def test_blank_headers_count_as_absent() -> None:
    assert caller(X_User_Id="  ").user_id is None
