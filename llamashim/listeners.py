"""Listening sockets for several workers (``server.workers``): one ``SO_REUSEPORT`` socket per worker, or one socket
the supervisor holds and every worker adopts.

With one process, listeners are Twisted endpoint strings (:func:`llamashim.service.listener`). With several, the
processes must share the address. On Linux each worker opens its own socket on it with ``SO_REUSEPORT``: the kernel
then spreads new connections over the workers' sockets by a hash of the connection, so no worker's accept queue is a
hot spot and a worker that dies takes only its own socket away. Twisted's ``listenTCP`` (and the ``tcp:`` endpoint)
has no reuse-port option, so the socket is made here — ``SO_REUSEPORT``, bind, listen, non-blocking — and handed to
``reactor.adoptStreamPort``, which serves it as any listening port. Where ``SO_REUSEPORT`` is missing, and for a
socket systemd hands over (``systemd:domain=INET:index=0``), the supervisor has the one socket and every worker
adopts the inherited descriptor: the workers then take turns accepting from one queue.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IListeningPort, IProtocolFactory

from llamashim.config import ConfigError
from llamashim.preflight import split_endpoint

FIRST_SYSTEMD_FD = 3  # sd_listen_fds(3): the sockets systemd hands over start at descriptor 3
DEFAULT_BACKLOG = 1024  # as service.with_backlog: Twisted's 50 drops SYNs when a few dozen clients connect at once


def reuse_port_available() -> bool:
    """Whether each worker can have its own socket on one address (Linux's load-spreading ``SO_REUSEPORT``; the BSDs'
    has other semantics — the last socket takes every connection — so only Linux counts)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def tcp_address(description: str) -> tuple[socket.AddressFamily, str, int, int] | None:
    """(family, host, port, backlog) of a ``tcp:``/``tcp6:`` endpoint string; ``None`` for any other kind."""
    kind, args = split_endpoint(description)
    if kind not in ("tcp", "tcp6"):
        return None
    try:
        port = int(args.get("port", ""))
        backlog = int(args.get("backlog", DEFAULT_BACKLOG))
    except ValueError:
        raise ConfigError(f"listener {description!r} is not a valid endpoint: bad port or backlog") from None
    host = args.get("interface", "::" if kind == "tcp6" else "")
    family = socket.AF_INET6 if kind == "tcp6" or ":" in host else socket.AF_INET
    return family, host, port, backlog


def systemd_index(description: str) -> int | None:
    """The ``index`` of a ``systemd:`` endpoint string (``None`` for any other kind)."""
    kind, args = split_endpoint(description)
    if kind != "systemd":
        return None
    try:
        return int(args.get("index", "0"))
    except ValueError:
        raise ConfigError(f"listener {description!r}: index must be a number") from None


def bound_socket(description: str, reuse_port: bool) -> socket.socket:
    """A listening, non-blocking TCP socket on ``description``'s address (``SO_REUSEPORT`` when ``reuse_port``)."""
    address = tcp_address(description)
    assert address is not None
    family, host, port, backlog = address
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted's listenTCP does
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)  # adoptStreamPort's requirement
    except OSError:
        sock.close()
        raise
    return sock


class AdoptedPort(Service):
    """A listener served from a socket made outside Twisted: ``open_socket()`` at start (a new ``SO_REUSEPORT``
    socket, or the inherited descriptor), adopted with ``reactor.adoptStreamPort``; stopping stops listening."""

    def __init__(self, reactor: object, factory: IProtocolFactory, open_socket: Callable[[], socket.socket]) -> None:
        self.reactor = reactor
        self.factory = factory
        self.open_socket = open_socket
        self.port: IListeningPort | None = None

    def startService(self) -> None:
        sock = self.open_socket()
        try:
            sock.setblocking(False)
            self.port = self.reactor.adoptStreamPort(  # type: ignore[attr-defined]
                sock.fileno(), sock.family, self.factory)
        finally:
            sock.close()  # the port holds its own duplicate of the descriptor
        super().startService()

    def stopService(self) -> object:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def inherited(fd: int) -> Callable[[], socket.socket]:
    """The listening socket the supervisor passed down at descriptor ``fd``."""
    return lambda: socket.socket(fileno=fd)


def worker_listener(description: str, factory: IProtocolFactory, reactor: object, fd: int | None) -> AdoptedPort:
    """A worker's listener on ``description``: the inherited socket ``fd``, or (``None``) its own reuse-port one."""
    if fd is not None:
        return AdoptedPort(reactor, factory, inherited(fd))
    return AdoptedPort(reactor, factory, lambda: bound_socket(description, reuse_port=True))
