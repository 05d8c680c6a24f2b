"""What every routes class is built with: :class:`RouteDeps`, made once by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamashim.chat.flow import ChatFlow
from llamashim.config import Config
from llamashim.upstream.client import UpstreamClient
from llamashim.upstream.limiter import UpstreamSlots


@dataclass(frozen=True)
class RouteDeps:
    config: Config
    upstream: UpstreamClient
    flow: ChatFlow
    slots: UpstreamSlots
    clock: Any  # IReactorTime
