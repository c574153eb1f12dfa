"""Endpoint strings: one address names a run, two sockets serve it.

A run is reached by one address (``tcp://host:5555`` or ``ipc:///path``). Telemetry (PUB) is
bound there and the control socket (ROUTER: snapshots now, commands later) on the address next
to it: port + 1 for tcp, ``<path>.ctl`` for ipc. Users type one string; both sides derive the
other the same way.
"""

from __future__ import annotations

import ipaddress
import random
import re
import socket
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"
_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]+\]|[^:/\[\]]+):(?P<port>\d{1,5})$")


class EndpointError(ValueError):
    """An endpoint string that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: ``scheme`` is ``tcp`` or ``ipc``."""

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def telemetry(self) -> str:
        return f"tcp://{self.host}:{self.port}" if self.scheme == "tcp" else f"ipc://{self.path}"

    @property
    def control(self) -> str:
        if self.scheme == "tcp":
            return f"tcp://{self.host}:{self.port + 1}"
        return f"ipc://{self.path}.ctl"

    def with_port(self, port: int) -> Endpoint:
        return Endpoint(self.scheme, self.host, port, self.path)

    def __str__(self) -> str:
        return self.telemetry


def parse_endpoint(text: str) -> Endpoint:
    """Parse ``tcp://host:port`` (port 0 = pick a free one) or ``ipc:///path``."""
    text = text.strip()
    if text.startswith("ipc://"):
        path = text[len("ipc://") :]
        if not path:
            raise EndpointError(f"{text!r}: an ipc endpoint needs a path, e.g. ipc:///tmp/run.sock")
        return Endpoint("ipc", path=path)
    match = _TCP.match(text)
    if not match:
        raise EndpointError(
            f"{text!r} is not an endpoint: use tcp://HOST:PORT (e.g. {DEFAULT_ENDPOINT}) "
            "or ipc:///path/to/socket"
        )
    port = int(match["port"])
    if port > 65534:
        raise EndpointError(f"{text!r}: port must be 0..65534 (the control socket uses port + 1)")
    problem = _host_problem(match["host"])
    if problem:
        raise EndpointError(f"{text!r}: bad address: {problem}")
    return Endpoint("tcp", host=match["host"], port=port)


_IPV4_LIKE = re.compile(r"^[0-9.]+$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an address (None if it can): checked here, without a lookup, so
    ``tcp://256.1.1.1:5555`` is a bad address at once, not a run that never answers."""
    if host == "*":  # ZeroMQ's bind-to-all
        return None
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
        return None
    if _IPV4_LIKE.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host} is not an IPv4 address (four numbers 0–255)"
        return None
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in host.split(".")):
        return f"{host!r} is not a host name"
    return None


def free_port_pair(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """Find a port P such that P and P + 1 are both free right now on ``host``.

    P is drawn *below* the kernel's ephemeral range. A viewer that connects before the run
    binds retries, and each try takes an ephemeral source port; were P in that range, a try
    could get P itself as its source and TCP would connect the socket to itself (a
    "self-connect"): the viewer then reads its own requests back and the run cannot bind P.
    """
    low, high = _below_ephemeral()
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.randrange(low, high - 1)
        if _bindable(host, port) and _bindable(host, port + 1):
            return port
    raise EndpointError(f"no free pair of adjacent ports found on {host}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _below_ephemeral() -> tuple[int, int]:
    """[low, high) under the ephemeral range (Linux: ip_local_port_range; else IANA's 49152)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 49152
    return (10_000, first) if first > 12_000 else (first // 2, first)


def is_loopback(endpoint: Endpoint) -> bool:
    """True for ipc and for tcp on a loopback address (127/8, ::1, localhost).

    Only literal addresses count: a name such as ``127.example.com`` or an interface name is
    not loopback whatever it resolves to (the refusal rule must not be fooled by DNS).
    """
    if endpoint.scheme == "ipc":
        return True
    host = endpoint.host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
