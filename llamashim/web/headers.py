"""Which headers cross the proxy (RFC 9110 §7.6.1 hop-by-hop rules)."""

from __future__ import annotations

from twisted.web.http_headers import Headers

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Recomputed by the HTTP stack on each side rather than copied.
RECOMPUTED = frozenset({b"host", b"content-length"})


def _connection_tokens(headers: Headers) -> set[bytes]:
    tokens: set[bytes] = set()
    for value in headers.getRawHeaders(b"connection", []):
        tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


def end_to_end(headers: Headers, drop: frozenset[bytes] = frozenset()) -> Headers:
    """A copy of ``headers`` without hop-by-hop fields (including those named in ``Connection``)."""
    skip = HOP_BY_HOP | RECOMPUTED | _connection_tokens(headers) | drop
    out = Headers()
    for name, values in headers.getAllRawHeaders():
        lower = name.lower()
        if lower in skip:
            continue
        if lower == b"content-encoding":
            # twisted's ContentDecoderAgent (which treq always adds) leaves an empty Content-Encoding behind
            values = [v for v in values if v.strip()]
            if not values:
                continue
        out.setRawHeaders(name, values)
    return out
