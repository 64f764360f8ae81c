"""Checks on a request head: the total size of its fields, protocol upgrades."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.problems import HeaderFieldsTooLarge, NotImplementedByGateway
from gateway.request_head import check_head, header_bytes


def _request(headers: dict[str, str]) -> Request:
    return Request(EnvironBuilder(path="/x", headers=headers).get_environ())


def test_header_bytes_count_names_values_and_separators() -> None:
    size = header_bytes(_request({"X-A": "12345"}).environ)
    assert size >= len("X-A: 12345\r\n")


def test_fields_over_the_total_cap_are_431() -> None:
    headers = {f"X-F{i}": "v" * 1000 for i in range(10)}
    with pytest.raises(HeaderFieldsTooLarge):
        check_head(_request(headers), max_header_bytes=5000)
    check_head(_request(headers), max_header_bytes=20_000)


def test_an_upgrade_asked_for_is_501() -> None:
    with pytest.raises(NotImplementedByGateway):
        check_head(_request({"Connection": "keep-alive, Upgrade", "Upgrade": "websocket"}), 65536)


def test_a_bare_upgrade_field_is_only_a_hop_by_hop_field() -> None:
    check_head(_request({"Upgrade": "websocket"}), 65536)
