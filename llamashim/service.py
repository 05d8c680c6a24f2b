"""The composition root below twistd: build the service tree from a validated :class:`Config`."""

from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.logger import Logger

from llamashim.app import Routes
from llamashim.config import Config
from llamashim.upstream import UpstreamClient
from llamashim.web import ShimSite

log = Logger(namespace="llamashim")


class StartupLog(Service):
    """Says once, at start-up, what this daemon serves and how (never keys)."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def startService(self) -> None:
        super().startService()
        c = self.config
        log.info(
            "llamashim listening on {listen} -> upstream {upstream} (tools.streaming={tools}, thinking={thinking})",
            listen=", ".join(c.listen),
            upstream=c.upstream.url,
            tools=c.tools.streaming,
            thinking=c.thinking.mode,
        )
        if c.log.verbose:
            log.warn("verbose logging is ON: request and response bodies will be logged")


def build_service(config: Config, reactor: Any) -> MultiService:
    top = MultiService()
    top.setName("llamashim")
    upstream = UpstreamClient(
        reactor,
        config.upstream.url,
        verify=config.upstream.verify,
        connect_timeout=config.upstream.connect_timeout,
        idle_timeout=config.upstream.idle_timeout,
        request_timeout=config.upstream.request_timeout,
        api_key=config.upstream.api_key,
    )
    upstream.setServiceParent(top)
    routes = Routes(config, upstream)
    site = ShimSite(routes.resource(), reactor, max_body_bytes=config.limits.max_body_bytes)
    top.site = site  # type: ignore[attr-defined]
    top.routes = routes  # type: ignore[attr-defined]
    StartupLog(config).setServiceParent(top)
    for description in config.listen:
        strports.service(description, site, reactor=reactor).setServiceParent(top)
    return top
