"""API keys, the Host allow-list and CORS decisions."""

from __future__ import annotations

import pytest
from twisted.web.http_headers import Headers

from llamashim.web.dialect import Dialect
from llamashim.web.gate import Gate, host_of, hosts_for_listeners, key_hint


def h(**kw: str) -> Headers:
    return Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in kw.items()})


OPEN = ("/health", "/api/version", "/api/tags", "/api/show", "GET /", "HEAD /")  # what the daemon opens by default
KEYED = Gate(api_keys=(b"sk-alpha-1234", b"sk-beta-5678"), open_paths=OPEN)


class GoogleLike(Dialect):
    name = "googlelike"
    key_headers = (b"x-goog-api-key",)
    key_query = b"key"


@pytest.mark.parametrize(
    ("headers", "ok"),
    [
        (h(host="localhost", authorization="Bearer sk-alpha-1234"), True),
        (h(host="localhost", authorization="bearer sk-beta-5678"), True),
        (h(host="localhost", x_api_key="sk-beta-5678"), True),
        (h(host="localhost", authorization="Bearer sk-alpha-123"), False),
        (h(host="localhost", authorization="Basic sk-alpha-1234"), False),
        (h(host="localhost", authorization="Bearer "), False),
        (h(host="localhost"), False),
    ],
)
def test_api_keys(headers: Headers, ok: bool) -> None:
    """A listed key as Bearer (any case) or x-api-key passes; anything else is a 401 that does not echo the key."""
    err = KEYED.check(b"POST", b"/v1/chat/completions", headers)
    assert (err is None) is ok
    if not ok:
        assert err is not None and err.status == 401 and "sk-" not in err.message


@pytest.mark.parametrize(
    ("method", "path"),
    [(b"GET", b"/health"), (b"GET", b"/api/version"), (b"GET", b"/api/tags"), (b"POST", b"/api/show"),
     (b"GET", b"/"), (b"HEAD", b"/")],
)
def test_open_paths_need_no_key(method: bytes, path: bytes) -> None:
    """Health, version, tags, show and GET/HEAD / pass the key check without any key."""
    assert KEYED.check(method, path, h(host="127.0.0.1")) is None


def test_post_to_root_is_not_open() -> None:
    """Only GET / is open: a POST to / without a key is a 401."""
    err = KEYED.check(b"POST", b"/", h(host="127.0.0.1"))
    assert err is not None and err.status == 401


def test_dialect_key_header_and_query_parameter() -> None:
    """A dialect's own key header and query parameter carry the key on its paths, and only there."""
    path = b"/v1beta/models/m:generateContent"
    assert KEYED.check(b"POST", path, h(host="localhost", x_goog_api_key="sk-beta-5678"), GoogleLike()) is None
    assert KEYED.check(b"POST", path, h(host="localhost"), GoogleLike(), b"alt=sse&key=sk-alpha-1234") is None
    wrong = KEYED.check(b"POST", path, h(host="localhost"), GoogleLike(), b"key=sk-nope-0000")
    assert wrong is not None and wrong.status == 401
    headers = h(host="localhost", x_goog_api_key="sk-beta-5678")
    elsewhere = KEYED.check(b"POST", path, headers, Dialect(), b"key=sk-beta-5678")
    assert elsewhere is not None and elsewhere.status == 401


def test_no_keys_means_no_auth() -> None:
    """With no API keys configured, a chat request without credentials passes."""
    assert Gate().check(b"POST", b"/v1/chat/completions", h(host="localhost")) is None


@pytest.mark.parametrize(
    ("host", "ok"),
    [("localhost:11434", True), ("127.0.0.1", True), ("[::1]:11434", True), ("LOCALHOST", True),
     ("evil.example:11434", False), ("", False), ("127.0.0.1.evil.example", False)],
)
def test_host_allow_list(host: str, ok: bool) -> None:
    """Loopback Host headers (any case, with a port, IPv6) pass; other or empty hosts are a 403."""
    err = Gate().check(b"GET", b"/v1/models", h(host=host))
    assert (err is None) is ok
    if not ok:
        assert err is not None and err.status == 403


def test_host_of() -> None:
    """host_of lower-cases and drops the port, keeps IPv6 brackets and leaves a bare IPv6 address whole."""
    assert host_of(b"Example.COM:80") == "example.com"
    assert host_of(b"[::1]:8080") == "[::1]"
    assert host_of(b"::1") == "::1"


def test_default_hosts_from_listeners() -> None:
    """Listener interfaces plus localhost form the Host allow-list; no interface or 0.0.0.0 turns it off."""
    hosts = hosts_for_listeners(["tcp:11434:interface=127.0.0.1", "tcp:8000:interface=10.1.2.3"])
    assert hosts is not None and "10.1.2.3" in hosts and "localhost" in hosts
    assert hosts_for_listeners(["tcp:11434"]) is None
    assert hosts_for_listeners(["tcp:11434:interface=0.0.0.0"]) is None
    assert hosts_for_listeners(["unix:/run/x.sock"]) is not None


def test_cors() -> None:
    """CORS headers go only to listed origins (or '*'); preflights echo the asked headers; off by default."""
    g = Gate(cors_origins=("https://app.example",))
    assert g.cors_headers(h(origin="https://other.example"), False) == {}
    simple = g.cors_headers(h(origin="https://app.example"), False)
    assert simple[b"access-control-allow-origin"] == b"https://app.example"
    assert simple[b"vary"] == b"Origin"
    pre = g.cors_headers(h(origin="https://app.example", access_control_request_headers="authorization"), True)
    assert pre[b"access-control-allow-headers"] == b"authorization"
    assert b"POST" in pre[b"access-control-allow-methods"]
    assert Gate().cors_headers(h(origin="https://app.example"), True) == {}
    assert Gate(cors_origins=("*",)).cors_headers(h(origin="x"), False)[b"access-control-allow-origin"] == b"*"


def test_key_hint_never_shows_the_key() -> None:
    """key_hint shows only the last four characters of a key, and nothing of a short one."""
    assert key_hint("sk-verysecretkey-abcd") == "…abcd"
    assert key_hint("short") == "…"
