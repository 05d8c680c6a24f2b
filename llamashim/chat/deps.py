"""What every routes class is built with: :class:`RouteDeps`, made once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamashim.chat.flow import ChatFlow
from llamashim.config import Config
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.limiter import UpstreamSlots
from llamashim.upstream.set import UpstreamSet


@dataclass(frozen=True)
class RouteDeps:
    config: Config
    upstreams: UpstreamSet
    flow: ChatFlow
    slots: UpstreamSlots
    clock: Any  # IReactorTime
    # this process's index among the daemon's workers (server.workers; 0 alone): worker 0 does the daemon-wide
    # chores, such as pruning the Responses store
    worker: int = 0

    @property
    def upstream(self) -> UpstreamClient:
        """The default upstream's client (the pass-through, and requests that name no model)."""
        return self.upstreams.default.client
