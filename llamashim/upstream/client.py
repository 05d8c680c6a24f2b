"""The upstream client: our own connection pool and ``Agent`` (treq over the same pool for metadata GETs), owned by
a service.

Everything that talks to llama-server goes through :class:`UpstreamClient`. It owns the ``HTTPConnectionPool`` (closed
in ``stopService``), applies the TLS policy (verify by default, a private CA, or loudly no verification), the connect
timeout (the ``Agent``'s) and the optional total request timeout, and turns connection-level failures into
:class:`~llamashim.errors.ShimError` values with the status DESIGN.md promises (502 unreachable / TLS, 504 timeout).
Responses are always unbuffered: the caller streams or collects the body itself (see :mod:`llamashim.upstream.body`).
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory, IBodyProducer, IResponse
from zope.interface import implementer

from llamashim import compat
from llamashim.errors import ShimError
from llamashim.upstream.body import BytesProducer
from llamashim.upstream.tls import describe_tls_failure, policy_for


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
        agent: Any = None,
    ) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/")
        self._base = self.base_url.encode("ascii")
        self.verify = verify
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.api_key = api_key
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 64
        self.pool.cachedConnectionTimeout = 120
        self.pool.retryAutomatically = False
        compat.quiet_pool(self.pool)
        # In-memory tests pass an agent here (llamashim.testing.memory: a RequestTraversalAgent over a fake upstream).
        self.agent = agent or Agent.usingEndpointFactory(
            reactor,
            _CachedEndpoints(compat.StandardEndpointFactory(reactor, policy_for(verify), connect_timeout, None)),
            pool=self.pool,
        )
        # treq keeps one cookie jar per client; a proxy must never carry one client's cookies to another's request.
        self.http = HTTPClient(self.agent, cookiejar=NoCookies())  # type: ignore[arg-type]
        # Per-upstream facts learnt at run time (e.g. "this build refuses streamed tools").
        self.facts: dict[str, bool] = {}

    @property
    def clock(self) -> IReactorTime:
        return self.reactor  # type: ignore[no-any-return]

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

        Cancelling the returned Deferred aborts the upstream connection at once. Failures arrive as
        :class:`ShimError` (502/504) with a message naming the cause.
        """
        headers = headers if headers is not None else Headers()
        if self.api_key:
            headers.setRawHeaders(b"authorization", [b"Bearer " + self.api_key.encode("latin-1")])
        if isinstance(body, bytes):
            body = BytesProducer(body)
        # The hot path goes to the pool's Agent directly, not through treq's per-request wrappers (URL parsing,
        # cookies, redirects, content decoding: wrong for a proxy and measurable; see docs/performance.md).
        url = self.url(path)
        d = self.agent.request(method, url, headers, body)
        replay = getattr(body, "body", None) if body is not None else b""
        if isinstance(replay, bytes):
            d.addErrback(self._retry_stale, method, url, headers, replay)
        return self._guard(d)

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

    def get(self, path: bytes, headers: Headers | None = None) -> Deferred[IResponse]:
        """A metadata GET (``/health``, ``/props``, ``/v1/models``) through treq, with the same timeouts and errors."""
        headers = headers.copy() if headers is not None else Headers()
        if self.api_key:
            headers.setRawHeaders(b"authorization", [b"Bearer " + self.api_key.encode("latin-1")])
        d: Deferred[IResponse] = self.http.get(  # type: ignore[assignment]
            self.url(path).decode("ascii"), headers=headers, allow_redirects=False, unbuffered=True,
            reactor=self.reactor,
        )
        return self._guard(d)

    def _guard(self, d: Deferred[IResponse]) -> Deferred[IResponse]:
        timed_out: list[str] = []
        timers = []
        if self.request_timeout:
            timers.append(self._arm(d, self.request_timeout, "request_timeout", timed_out))
        # Until the headers arrive, silence counts against the idle timeout too.
        if self.idle_timeout:
            timers.append(self._arm(d, self.idle_timeout, "idle_timeout", timed_out))

        def done(result: Any) -> Any:
            for t in timers:
                if t.active():
                    t.cancel()
            if isinstance(result, Failure):
                return self._translate(result, timed_out)
            return result

        return d.addBoth(done)

    def _arm(self, d: Deferred[Any], seconds: float, what: str, flag: list[str]) -> Any:
        def fire() -> None:
            flag.append(what)
            d.cancel()

        return self.reactor.callLater(seconds, fire)

    def _translate(self, failure: Failure, timed_out: list[str]) -> Failure:
        where = self.base_url
        if failure.check(ShimError):
            return failure
        if timed_out:  # our own timer cancelled the request (the failure may wrap the CancelledError)
            what = timed_out[0]
            seconds = self.request_timeout if what == "request_timeout" else self.idle_timeout
            return Failure(UpstreamTimeout(f"upstream {where} did not answer within {seconds:g} s (upstream.{what})"))
        if failure.check(CancelledError):
            return failure  # the client went away; nobody is listening for an answer
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


@implementer(IAgentEndpointFactory)
class _CachedEndpoints:
    """One endpoint per upstream origin, built once: twisted's Agent would build a HostnameEndpoint (with an IDNA
    check of the host name) for every request, even when the pool hands it a kept-alive connection."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.cache: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self.cache.get(key)
        if endpoint is None:
            endpoint = self.cache[key] = self.factory.endpointForURI(uri)
        return endpoint


class NoCookies(CookieJar):
    """A cookie jar that keeps nothing."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any) -> None:
        pass
