"""TLS on both sides: an HTTPS upstream with a self-signed CA (verify / CA file / insecure) and ``ssl:`` listeners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from treq.client import HTTPClient
from twisted.internet import ssl
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from llamashim import jsonutil
from tests.integration.certs import CertFiles, make_certs
from tests.integration.support import config, reactor, start_shim, timeout


class Props(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return jsonutil.dumps({"total_slots": 1, "path": request.path.decode()})


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return make_certs(tmp_path)


def tls_upstream(certs: CertFiles) -> tuple[Any, str]:
    cert = ssl.PrivateCertificate.loadPEM(certs.combined.read_text())
    site = Site(Props())
    site.noisy = False
    port = reactor.listenSSL(0, site, cert.options(), interface="127.0.0.1")
    return port, f"https://localhost:{port.getHost().port}"


async def get(url: str, client: Any = None) -> tuple[int, Any]:
    if client is None:
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    response = await timeout(client.get(url))
    body = await timeout(response.content())
    return response.code, jsonutil.loads(body)


@pytest_twisted.ensureDeferred
async def test_self_signed_upstream_is_refused_by_default_naming_the_cause(certs: CertFiles) -> None:
    """A self-signed HTTPS upstream is a 502 by default, the message naming the certificate and the host."""
    port, url = tls_upstream(certs)
    shim = await start_shim(config(url))
    try:
        code, body = await get(shim.url + "/props")
        assert code == 502
        message = body["error"]["message"]
        assert "certificate" in message.lower(), message
        assert "localhost" in message
    finally:
        await shim.stop()
        await port.stopListening()


@pytest.mark.parametrize("how", ["ca_file", "verify_path"])
@pytest_twisted.ensureDeferred
async def test_upstream_trusted_through_ca_file(certs: CertFiles, how: str) -> None:
    """A CA given by --ca-file or as upstream.verify makes the self-signed upstream trusted and proxied."""
    port, url = tls_upstream(certs)
    cli: dict[str, Any] = {"ca_file": str(certs.ca)} if how == "ca_file" else {}
    environ: dict[str, str] = {}
    cfg = config(url, cli, environ)
    if how == "verify_path":
        import dataclasses

        cfg = dataclasses.replace(cfg, upstream=dataclasses.replace(cfg.upstream, verify=str(certs.ca)))
    shim = await start_shim(cfg)
    try:
        code, body = await get(shim.url + "/props")
        assert code == 200
        assert body == {"total_slots": 1, "path": "/props"}
    finally:
        await shim.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_insecure_upstream_works(certs: CertFiles) -> None:
    """--insecure makes the self-signed HTTPS upstream reachable without verification."""
    port, url = tls_upstream(certs)
    shim = await start_shim(config(url, {"insecure": True}))
    try:
        code, body = await get(shim.url + "/props")
        assert code == 200 and body["total_slots"] == 1
    finally:
        await shim.stop()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_ssl_listener_serves_https(certs: CertFiles) -> None:
    """An ssl: listener serves HTTPS with the given certificate, proxying to the upstream."""
    up_site = Site(Props())
    up_port = reactor.listenTCP(0, up_site, interface="127.0.0.1")
    listen = f"ssl:0:interface=127.0.0.1:privateKey={certs.key}:certKey={certs.cert}"
    shim = await start_shim(config(f"http://127.0.0.1:{up_port.getHost().port}", {"listen": [listen]}))
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        trust = ssl.Certificate.loadPEM(certs.ca.read_bytes())
        agent = Agent(reactor, BrowserLikePolicyForHTTPS(trustRoot=trust), pool=pool)
        client = HTTPClient(agent)
        https = f"https://localhost:{shim.port_number}"
        code, body = await get(https + "/props", client)
        assert code == 200 and body["path"] == "/props"
    finally:
        await pool.closeCachedConnections()
        await shim.stop()
        await up_port.stopListening()
