"""The upstream client: our own connection pool and ``Agent``, owned by a service.

Everything that talks to llama-server goes through :class:`UpstreamClient`. It owns the ``HTTPConnectionPool`` (closed
in ``stopService``), applies the TLS policy (verify by default, a private CA, or loudly no verification), the connect
timeout (each connection attempt's), the idle and total request timeouts until the answer's headers
(``Deferred.addTimeout``), and turns connection-level failures into :class:`~llamashim.errors.ShimError` values with
the status DESIGN.md promises (502 unreachable / TLS, 504 timeout). A refused connection fails at once (see
:class:`UpstreamEndpoints`), so a request fails over to another upstream without waiting. Responses are always
unbuffered: the caller streams or collects the body itself (see :mod:`llamashim.upstream.body`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import URI, Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IAgentEndpointFactory, IBodyProducer, IPolicyForHTTPS, IResponse
from zope.interface import implementer

from llamashim import compat, jsonutil
from llamashim.config import UpstreamSpec
from llamashim.errors import ShimError
from llamashim.upstream.body import BytesProducer
from llamashim.upstream.tls import describe_tls_failure, policy_for

JSON_CONTENT = [b"application/json"]


class UpstreamTimeout(ShimError):
    def __init__(self, message: str):
        super().__init__(504, message, type="timeout_error")


class UpstreamClient(Service):
    """HTTP(S) client for one llama-server base URL."""

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        base_url: str,
        verify: bool | str = True,
        connect_timeout: float = 10.0,
        idle_timeout: float | None = 600.0,
        request_timeout: float | None = None,
        api_key: str | None = None,
        agent: IAgent | None = None,
    ) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/")
        self._base = self.base_url.encode("ascii")
        self.verify = verify
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self._authorization = [b"Bearer " + api_key.encode("latin-1")] if api_key else None
        # Until the answer's headers arrive, silence counts against the idle timeout too.
        self._deadlines = [(seconds, key) for seconds, key in ((request_timeout, "request_timeout"),
                                                               (idle_timeout, "idle_timeout")) if seconds]
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 64
        self.pool.cachedConnectionTimeout = 120
        self.pool.retryAutomatically = False
        compat.quiet_pool(self.pool)
        # In-memory tests pass an agent here (llamashim.testing.memory: a MemoryAgent over a fake upstream).
        self.agent: IAgent = agent or Agent.usingEndpointFactory(
            reactor, UpstreamEndpoints(reactor, policy_for(verify), connect_timeout), pool=self.pool)
        # Per-upstream facts learnt at run time (e.g. "this build refuses streamed tools").
        self.facts: dict[str, bool] = {}

    @classmethod
    def from_spec(cls, reactor: Any, spec: UpstreamSpec, url: str | None = None,
                  agent: IAgent | None = None) -> UpstreamClient:
        """The client of a configured upstream, at its ``url`` (``url`` given: a spawned llama-server's)."""
        base_url = url or spec.url
        if base_url is None:
            raise ValueError(f"upstream {spec.name} has no URL yet (a spawned llama-server's is known once it has "
                             "its port)")
        return cls(reactor, base_url, verify=spec.verify, connect_timeout=spec.connect_timeout,
                   idle_timeout=spec.idle_timeout, request_timeout=spec.request_timeout, api_key=spec.api_key,
                   agent=agent)

    def startService(self) -> None:
        super().startService()
        if self.verify is False and self.base_url.startswith("https:"):
            self.log.warn(
                "TLS verification of the upstream {url} is OFF (--insecure / upstream.verify: false): "
                "anyone on the path can impersonate it",
                url=self.base_url,
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.pool.closeCachedConnections()  # type: ignore[no-any-return]

    def url(self, path: bytes) -> bytes:
        """The absolute upstream URL for ``path`` (which carries its query string)."""
        return self._base + path

    def request(
        self,
        method: bytes,
        path: bytes,
        headers: Headers | None = None,
        body: bytes | IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        """Send a request; fire with the (unbuffered) response once its headers are in.

        ``headers`` (a new ``Headers`` when not given) get the upstream's API key. Cancelling the returned Deferred
        aborts the upstream connection at once. Failures arrive as :class:`ShimError` (502/504) with a message
        naming the cause.
        """
        headers = headers if headers is not None else Headers()
        if self._authorization is not None:
            headers.setRawHeaders(b"authorization", self._authorization)
        if isinstance(body, bytes):
            body = BytesProducer(body)
        # The hot path goes to the pool's Agent directly, not through treq's per-request wrappers (URL parsing,
        # cookies, redirects, content decoding: wrong for a proxy and measurable; see docs/performance.md).
        url = self.url(path)
        d = self.agent.request(method, url, headers, body)
        replay = getattr(body, "body", None) if body is not None else b""
        if isinstance(replay, bytes):
            d.addErrback(self._retry_stale, method, url, headers, replay)
        for seconds, key in self._deadlines:
            d.addTimeout(seconds, self.reactor, onTimeoutCancel=self._timed_out(key))
        return d.addErrback(self._translate)

    def post_json(self, path: bytes, body: Any, headers: Headers | None = None) -> Deferred[IResponse]:
        """POST ``body`` as compact JSON to ``path``, as :meth:`request` (``headers`` get the content type)."""
        headers = headers if headers is not None else Headers()
        headers.setRawHeaders(b"content-type", JSON_CONTENT)
        return self.request(b"POST", path, headers, BytesProducer(jsonutil.dumps(body)))

    def get(self, path: bytes, headers: Headers | None = None) -> Deferred[IResponse]:
        """A metadata GET (``/health``, ``/props``, ``/v1/models``), as :meth:`request`."""
        return self.request(b"GET", path, headers)

    def _retry_stale(self, failure: Failure, method: bytes, url: bytes, headers: Headers, data: bytes) -> Any:
        """A kept-alive connection the upstream had already closed (llama-server closes idle ones): the request
        never reached it, so send it once more on a new connection. Anything else is passed on."""
        value = failure.value
        if isinstance(value, compat.RequestNotSent) or (
            isinstance(value, ResponseNeverReceived)
            and all(r.check(ConnectionDone, ConnectionLost) for r in value.reasons)
        ):
            self.log.debug("upstream connection was stale; retrying {url} once", url=url.decode("ascii", "replace"))
            return self.agent.request(method, url, headers, BytesProducer(data) if data or method == b"POST" else None)
        return failure

    def _timed_out(self, key: str) -> Callable[[Any, float], Failure]:
        """What a request that ``upstream.<key>`` cut short fails with (whatever the cancellation left)."""

        def timed_out(_cancelled: Any, seconds: float) -> Failure:
            return Failure(UpstreamTimeout(f"upstream {self.base_url} did not answer within {seconds:g} s "
                                           f"(upstream.{key})"))

        return timed_out

    def _translate(self, failure: Failure) -> Failure:
        where = self.base_url
        if failure.check(ShimError):
            return failure  # a timeout of ours
        if failure.check(CancelledError):
            return failure  # the client went away; nobody is listening for an answer
        if failure.check(ierror.ConnectingCancelledError):
            return Failure(CancelledError())  # the client went away while we were connecting
        reasons = [failure]
        if isinstance(failure.value, ResponseNeverReceived):
            reasons = list(failure.value.reasons)
            if reasons and all(r.check(CancelledError) for r in reasons):
                return Failure(CancelledError())  # the client went away while we waited for the headers
        for reason in reasons:
            tls = describe_tls_failure(reason)
            if tls:
                return Failure(ShimError(502, f"TLS with upstream {where} failed: {tls}", type="upstream_error"))
            if reason.check(ierror.TimeoutError):
                return Failure(
                    UpstreamTimeout(
                        f"connecting to upstream {where} timed out after {self.connect_timeout:g} s "
                        "(upstream.connect_timeout)"
                    )
                )
            if reason.check(ierror.ConnectionRefusedError):
                return Failure(
                    ShimError(502, f"upstream {where} is unreachable: connection refused", type="upstream_error")
                )
            if reason.check(ierror.DNSLookupError):
                return Failure(
                    ShimError(502, f"upstream {where} is unreachable: DNS lookup failed", type="upstream_error")
                )
        detail = reasons[0].getErrorMessage() or type(reasons[0].value).__name__
        return Failure(ShimError(502, f"upstream {where} failed: {detail}", type="upstream_error"))


ATTEMPT_DELAY = 0.01
"""Seconds between ``HostnameEndpoint``'s connection attempts (and before it sees that the last one failed)."""


@implementer(IAgentEndpointFactory)
class UpstreamEndpoints:
    """The endpoint of each upstream origin, built once: twisted's Agent would build one for every request (with an
    IDNA check of the host name), even when the pool then hands it a kept-alive connection.

    An IP address is connected to directly. A host name goes through ``HostnameEndpoint`` with an attempt delay of
    :data:`ATTEMPT_DELAY`: by default it starts one address every 0.3 s and sees that the last one failed only at
    the next 0.3 s tick, so every refused connection (``localhost`` → ``::1`` when llama-server listens on
    127.0.0.1, or an upstream that is down) cost 0.3 s or more before the request failed, failed over or
    connected. Not 0: its ``LoopingCall`` keeps ticking until a connection wins or all fail, and at interval 0
    that is a busy loop for as long as a connection attempt is pending."""

    def __init__(self, reactor: Any, policy: IPolicyForHTTPS, connect_timeout: float) -> None:
        self.reactor = reactor
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.cache: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self.cache.get(key)
        if endpoint is None:
            endpoint = self.cache[key] = self._endpoint(uri)
        return endpoint

    def _endpoint(self, uri: URI) -> IStreamClientEndpoint:
        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"Unsupported scheme: {uri.scheme!r}")
        host = uri.host.decode("ascii")
        tcp: IStreamClientEndpoint
        if isIPv6Address(host):
            tcp = TCP6ClientEndpoint(self.reactor, host, uri.port, self.connect_timeout)
        elif isIPAddress(host):
            tcp = TCP4ClientEndpoint(self.reactor, host, uri.port, self.connect_timeout)
        else:
            tcp = HostnameEndpoint(self.reactor, host, uri.port, self.connect_timeout, attemptDelay=ATTEMPT_DELAY)
        if uri.scheme == b"https":
            return wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), tcp)
        return tcp
