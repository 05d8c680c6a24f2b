"""Everything not routed: passed to the upstream as it came, streamed both ways (hop-by-hop headers dropped)."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse
from twisted.web.server import Request

from llamashim import jsonutil
from llamashim.stream.transform import Identity
from llamashim.upstream.body import BytesProducer
from llamashim.upstream.client import UpstreamClient
from llamashim.web.context import context_of
from llamashim.web.headers import end_to_end
from llamashim.web.relay import StreamRelay
from llamashim.web.respond import read_body


async def pass_through(request: Request, upstream: UpstreamClient, clock: IReactorTime) -> None:
    body = read_body(request)
    headers = end_to_end(request.requestHeaders)
    producer = BytesProducer(body) if body or request.method in (b"POST", b"PUT", b"PATCH") else None
    started = clock.seconds()
    response: IResponse = await upstream.request(request.method, request.uri, headers, producer)
    context_of(request).upstream_ttfb = clock.seconds() - started
    await answer_as_upstream(request, response, clock, upstream.idle_timeout)


async def answer_as_upstream(request: Request, response: IResponse, clock: IReactorTime,
                             idle_timeout: float | None) -> None:
    """Answer ``request`` with the upstream's status, end-to-end headers and body, relayed as it comes."""
    request.setResponseCode(response.code, response.phrase)
    for name, values in end_to_end(response.headers).getAllRawHeaders():
        request.responseHeaders.setRawHeaders(name, values)
    if response.length is not UNKNOWN_LENGTH:
        request.setHeader(b"content-length", b"%d" % response.length)
    await StreamRelay(request, response, Identity(), clock, idle_timeout).start()


async def relay_json_request(
    request: Request, client: UpstreamClient, path: bytes, body: dict[str, Any], clock: IReactorTime,
    headers: Headers,
) -> None:
    """POST ``body`` (as compact JSON) to ``path`` upstream and relay the answer as it comes, status included."""
    response = await client.request(b"POST", path, headers, BytesProducer(jsonutil.dumps(body)))
    await answer_as_upstream(request, response, clock, client.idle_timeout)
