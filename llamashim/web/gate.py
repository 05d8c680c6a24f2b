"""Who may talk to llamashim: API keys, the Host allow-list (DNS rebinding) and CORS — pure decisions.

:class:`Gate` is consulted by :class:`llamashim.web.ShimRequest` before any route runs. It never sees bodies and never
logs keys: a key appears in logs at most as its last four characters (:func:`key_hint`).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from twisted.web.http_headers import Headers

from llamashim.errors import ShimError
from llamashim.web.dialect import Dialect

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
CORS_METHODS = b"GET, POST, PUT, DELETE, OPTIONS, HEAD"
CORS_DEFAULT_HEADERS = b"Authorization, Content-Type, X-Api-Key, X-Request-Id, X-Llamashim-Thinking"


def key_headers(dialect: Dialect | None) -> tuple[bytes, ...]:
    """The headers that may carry a key on a path of ``dialect`` (besides ``Authorization``); dropped before the
    request goes upstream."""
    return (b"x-api-key", *(dialect.key_headers if dialect is not None else ()))


def key_hint(key: str | bytes) -> str:
    """How a key may appear in a log line: its last four characters at most."""
    text = key.decode("latin-1") if isinstance(key, bytes) else key
    return "…" + text[-4:] if len(text) > 8 else "…"


def host_of(value: bytes) -> str:
    """The host part of a Host header, lowercased, without the port (IPv6 literals keep their brackets)."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        end = text.find("]")
        return text[: end + 1] if end > 0 else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def hosts_for_listeners(listen: Iterable[str]) -> tuple[str, ...] | None:
    """The default Host allow-list: loopback names plus the listen addresses; ``None`` (any host) when a listener
    binds every interface, because then the operator meant to be reached under names we cannot know."""
    hosts = set(LOOPBACK_HOSTS)
    for description in listen:
        kind = description.split(":", 1)[0]
        if kind not in ("tcp", "ssl", "tcp6"):
            continue
        interface = None
        for part in description.split(":")[1:]:
            if part.startswith("interface="):
                interface = part[len("interface=") :].replace("\\", "")
        if interface in (None, "", "0.0.0.0", "::"):
            return None
        hosts.add(interface.lower())
        if ":" in interface:
            hosts.add(f"[{interface.lower()}]")
    return tuple(sorted(hosts))


@dataclass(frozen=True)
class Gate:
    api_keys: tuple[bytes, ...] = ()
    open_paths: tuple[str, ...] = ()  # the composition root passes auth.open_paths, or every dialect's open paths
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    cors_origins: tuple[str, ...] = ()
    _open: frozenset[str] = field(init=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_open", frozenset(self.open_paths))

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def is_open(self, method: bytes, path: bytes) -> bool:
        p = path.decode("latin-1")
        return p in self._open or f"{method.decode('latin-1')} {p}" in self._open

    def check(
        self, method: bytes, path: bytes, headers: Headers, dialect: Dialect | None = None, query: bytes = b""
    ) -> ShimError | None:
        """``None`` when the request may proceed, else the error to answer."""
        if self.allowed_hosts is not None:
            host = headers.getRawHeaders(b"host", [b""])[0]
            if host_of(host) not in self.allowed_hosts:
                return ShimError(
                    403,
                    f"Host {host.decode('latin-1')!r} is not served here (server.allowed_hosts)",
                )
        if self.api_keys and not self.is_open(method, path) and not self.key_ok(headers, dialect, query):
            return ShimError(401, "missing or invalid API key", "authentication_error")
        return None

    def presented_key(self, headers: Headers, dialect: Dialect | None = None, query: bytes = b"") -> bytes | None:
        """The key a request presents: ``Authorization: Bearer``, ``X-Api-Key`` (llama-server's own pair), then the
        dialect's own key headers and query parameter (Gemini's ``x-goog-api-key`` and ``?key=``)."""
        auth = headers.getRawHeaders(b"authorization")
        if auth:
            scheme, _, value = auth[0].strip().partition(b" ")
            if scheme.lower() == b"bearer" and value.strip():
                return value.strip()
        for name in key_headers(dialect):
            api = headers.getRawHeaders(name)
            if api and api[0].strip():
                return api[0].strip()
        if dialect is not None and dialect.key_query is not None and query:
            found = parse_qs(query).get(dialect.key_query)
            if found and found[0].strip():
                return found[0].strip()
        return None

    def key_ok(self, headers: Headers, dialect: Dialect | None = None, query: bytes = b"") -> bool:
        key = self.presented_key(headers, dialect, query)
        if key is None:
            return False
        ok = False
        for candidate in self.api_keys:  # compare with every key, in constant time, whatever matches first
            ok |= hmac.compare_digest(candidate, key)
        return ok

    def cors_origin(self, headers: Headers) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for this request, or ``None`` (CORS off or origin not allowed)."""
        if not self.cors_origins:
            return None
        origin = headers.getRawHeaders(b"origin")
        if not origin:
            return None
        if "*" in self.cors_origins:
            return b"*"
        if origin[0].decode("latin-1") in self.cors_origins:
            return origin[0]
        return None

    def cors_headers(self, headers: Headers, preflight: bool) -> dict[bytes, bytes]:
        origin = self.cors_origin(headers)
        if origin is None:
            return {}
        out = {b"access-control-allow-origin": origin}
        if origin != b"*":
            out[b"vary"] = b"Origin"
        if preflight:
            requested = headers.getRawHeaders(b"access-control-request-headers")
            out[b"access-control-allow-methods"] = CORS_METHODS
            out[b"access-control-allow-headers"] = requested[0] if requested else CORS_DEFAULT_HEADERS
            out[b"access-control-max-age"] = b"600"
        else:
            out[b"access-control-expose-headers"] = b"X-Request-Id"
        return out
