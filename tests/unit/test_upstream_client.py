"""The upstream client on a MemoryReactorClock: refused connections fail at once, the idle and total timeouts until
the headers, the one place that adds the API key (POST and GET alike), post_json and from_spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from llamashim import jsonutil
from llamashim.config import UpstreamConfig, UpstreamSpec
from llamashim.errors import ShimError
from llamashim.upstream.client import ATTEMPT_DELAY, UpstreamClient


@implementer(IReactorPluggableNameResolver, IHostnameResolver)
class ResolvingClock(MemoryReactorClock):
    """A MemoryReactorClock whose name resolver answers at once from ``hosts`` (what HostnameEndpoint asks)."""

    def __init__(self, hosts: dict[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.hosts = hosts or {}
        self.nameResolver = self

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError

    def resolveHostName(self, receiver: IResolutionReceiver, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> IHostResolution:
        receiver.resolutionBegan(None)  # type: ignore[arg-type]  # (HostnameEndpoint does not look at it)
        for address in self.hosts.get(hostName, [hostName]):
            kind = IPv6Address if ":" in address else IPv4Address
            receiver.addressResolved(kind("TCP", address, portNumber))
        receiver.resolutionComplete()
        return None  # type: ignore[return-value]

    def refuse(self, index: int = -1) -> str:
        """The connection attempt ``index`` is refused; returns the address it went to."""
        host, _port, factory, _timeout, _bind = self.tcpClients[index]
        factory.clientConnectionFailed(self.connectors[index], Failure(ConnectionRefusedError()))
        return str(host)


def failure_of(d: Deferred[Any]) -> Failure:
    failures: list[Failure] = []
    d.addErrback(failures.append)
    assert failures, "the request has not failed"
    return failures[0]


def test_a_refused_connection_to_an_address_fails_at_once() -> None:
    """A refused connect to an IP address fails the request with the 502 before the clock moves at all (it took
    0.3 s: HostnameEndpoint's next tick)."""
    clock = ResolvingClock()
    client = UpstreamClient(clock, "http://127.0.0.1:8080")
    d = client.request(b"GET", b"/health")
    assert clock.refuse() == "127.0.0.1"
    err = failure_of(d).value
    assert isinstance(err, ShimError) and err.status == 502 and "connection refused" in err.message
    assert clock.seconds() == 0


def test_a_name_whose_addresses_all_refuse_fails_within_the_attempt_delay() -> None:
    """``localhost`` → ``::1`` and ``127.0.0.1``: the second attempt starts ATTEMPT_DELAY (10 ms) after the first,
    not 0.3 s later, and when both are refused the request fails one tick after that, with no timer left."""
    clock = ResolvingClock({"localhost": ["::1", "127.0.0.1"]})
    client = UpstreamClient(clock, "http://localhost:8080")
    d = client.request(b"GET", b"/health")
    assert [c[0] for c in clock.tcpClients] == ["::1"]
    clock.refuse(0)
    clock.advance(ATTEMPT_DELAY)
    assert [c[0] for c in clock.tcpClients] == ["::1", "127.0.0.1"]
    clock.refuse(1)
    clock.advance(ATTEMPT_DELAY)
    err = failure_of(d).value
    assert isinstance(err, ShimError) and "connection refused" in err.message
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize(("request_timeout", "idle_timeout", "key", "after"), [
    (None, 5.0, "idle_timeout", 5.0),
    (2.0, 5.0, "request_timeout", 2.0),
    (8.0, 5.0, "idle_timeout", 5.0),
])
def test_no_answer_before_the_timeout_is_a_504_naming_the_setting(request_timeout: float | None,
                                                                  idle_timeout: float, key: str,
                                                                  after: float) -> None:
    """No headers within the shorter of ``upstream.request_timeout`` and ``upstream.idle_timeout``: 504
    ``timeout_error`` naming that setting and its seconds, at that moment and not before; the attempt is dropped."""
    clock = ResolvingClock()
    client = UpstreamClient(clock, "http://127.0.0.1:8080", idle_timeout=idle_timeout,
                            request_timeout=request_timeout)
    d = client.request(b"GET", b"/v1/models")
    clock.advance(after - 0.01)
    assert not d.called
    clock.advance(0.01)
    err = failure_of(d).value
    assert isinstance(err, ShimError) and err.status == 504 and err.type == "timeout_error"
    assert err.message == f"upstream http://127.0.0.1:8080 did not answer within {after:g} s (upstream.{key})"
    assert clock.connectors[-1].stoppedConnecting
    assert not clock.getDelayedCalls()  # the other timer went with it


def test_a_client_that_leaves_is_a_cancellation_not_a_timeout() -> None:
    """Cancelling the request (the client went away) fails it with CancelledError, not a 502 or 504."""
    clock = ResolvingClock()
    client = UpstreamClient(clock, "http://127.0.0.1:8080", request_timeout=2.0)
    d = client.request(b"POST", b"/v1/chat/completions", body=b"{}")
    d.cancel()
    assert failure_of(d).check(CancelledError)
    assert not clock.getDelayedCalls()


@implementer(IAgent)
class Recorder:
    """An IAgent that records what it was asked and never answers."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes, Headers, bytes | None]] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[IResponse]:
        assert headers is not None
        self.sent.append((method, uri, headers, getattr(bodyProducer, "body", None)))
        return Deferred()


def test_post_json_and_get_carry_the_api_key_from_one_place() -> None:
    """``post_json`` sends compact JSON with its content type and the caller's headers; it and ``get`` both carry
    ``Authorization: Bearer`` with the upstream's API key."""
    agent = Recorder()
    client = UpstreamClient(MemoryReactorClock(), "http://gpu:8080/", api_key="sk-up", agent=agent)
    client.post_json(b"/tokenize", {"content": "hi"}, Headers({b"x-request-id": [b"r1"]}))
    client.get(b"/props")
    (post, get) = agent.sent
    assert post[:2] == (b"POST", b"http://gpu:8080/tokenize") and post[3] == jsonutil.dumps({"content": "hi"})
    assert post[2].getRawHeaders(b"content-type") == [b"application/json"]
    assert post[2].getRawHeaders(b"x-request-id") == [b"r1"]
    assert get[:2] == (b"GET", b"http://gpu:8080/props") and get[3] is None
    for _, _, headers, _ in agent.sent:
        assert headers.getRawHeaders(b"authorization") == [b"Bearer sk-up"]


def test_from_spec_takes_the_spec_settings_and_a_spawned_servers_url() -> None:
    """``from_spec`` builds the client from an upstream's settings; a spawned one's URL is given, none is an
    error."""
    defaults = UpstreamConfig(connect_timeout=3.0, idle_timeout=None, request_timeout=9.0, api_key="k")
    spec = UpstreamSpec.inheriting(defaults, name="gpu", url="http://gpu:1")
    client = UpstreamClient.from_spec(MemoryReactorClock(), spec)
    assert (client.base_url, client.connect_timeout, client.idle_timeout, client.request_timeout) == (
        "http://gpu:1", 3.0, None, 9.0)
    spawned = UpstreamSpec.inheriting(defaults, name="s", url=None)
    assert UpstreamClient.from_spec(MemoryReactorClock(), spawned, "http://127.0.0.1:5").base_url == \
        "http://127.0.0.1:5"
    with pytest.raises(ValueError, match="upstream s has no URL"):
        UpstreamClient.from_spec(MemoryReactorClock(), spawned)
