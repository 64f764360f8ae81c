"""The deadline backend's check that an idle pooled connection is still usable."""

from __future__ import annotations

import socket

from gateway.deadline import _readable_now


def test_an_idle_open_connection_is_not_readable() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert _readable_now(left) is False


def test_a_connection_the_peer_closed_is_readable() -> None:
    left, right = socket.socketpair()
    with left:
        right.close()
        assert _readable_now(left) is True


def test_a_connection_with_unexpected_bytes_is_readable() -> None:
    left, right = socket.socketpair()
    with left, right:
        right.sendall(b"x")
        assert _readable_now(left) is True


def test_a_closed_socket_counts_as_readable() -> None:
    left, right = socket.socketpair()
    right.close()
    left.close()
    assert _readable_now(left) is True
