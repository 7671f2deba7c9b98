"""The test helpers that tests rely on to be trustworthy: a port from ``unused_port`` must not
be one the kernel can hand to the next ``bind`` on port 0 (CI failed once on exactly that)."""

from __future__ import annotations

import socket

from tests.helpers import _ephemeral_port_floor, unused_port


def test_unused_ports_lie_below_the_kernel_ephemeral_range_and_are_handed_out_once() -> None:
    floor = _ephemeral_port_floor()
    ports = [unused_port() for _ in range(50)]

    assert all(1024 <= port < floor for port in ports), ports
    assert len(set(ports)) == len(ports)


def test_an_unused_port_is_free_to_listen_on() -> None:
    port = unused_port()
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert server.getsockname() == ("127.0.0.1", port)
