"""The resource tree: which path goes to which routes object — and so which dialect answers it.

Each dialect's routes object is a Klein resource mounted at its ``prefixes`` (``/api`` for Ollama,
``/v1/chat/completions`` for OpenAI chat, ...); a request goes to the longest prefix its path is under, which sees
the rest of the path as its own (``/api/chat`` → the Ollama routes' ``/chat``) — unless its routes object does not
claim that path (a dialect sharing a prefix with another API: Gemini's ``/v1/models/{model}:{method}`` under ``/v1``,
beside OpenAI's ``/v1/models``), which then goes on to the next prefix. Everything else goes to the fallback:
llamashim's own routes, which end in the pass-through, answering in the fallback dialect (OpenAI's, as the
composition root injects it).

The same match decides the dialect of errors answered before routing (401, 403, 413, 429, 503, the drain): one
table, one matcher.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from llamashim.web.dialect import Dialect


class Mountable(Protocol):
    """A routes object as the tree mounts it (every :class:`~llamashim.web.routing.DialectRoutes` is one)."""

    @property
    def dialect(self) -> Dialect: ...

    @property
    def prefixes(self) -> tuple[bytes, ...]: ...

    def resource(self) -> IResource: ...

    def claims(self, path: bytes) -> bool: ...


def _every_path(path: bytes) -> bool:
    return True


@dataclass(frozen=True)
class Mount:
    prefix: bytes
    resource: IResource
    dialect: Dialect
    claims: Callable[[bytes], bool] = _every_path  # which paths under the prefix are its own (the rest fall through)


class Root(Resource):
    isLeaf = True

    def __init__(self, routes: Iterable[Mountable], fallback: IResource, fallback_dialect: Dialect) -> None:
        super().__init__()
        mounts = [Mount(p.rstrip(b"/"), r.resource(), r.dialect, r.claims) for r in routes for p in r.prefixes]
        self._mounts = sorted(mounts, key=lambda m: -len(m.prefix))
        self.fallback = Mount(b"", fallback, fallback_dialect)

    def mount_for(self, path: bytes) -> Mount:
        for mount in self._mounts:
            prefix = mount.prefix
            if (path == prefix or path.startswith(prefix + b"/")) and mount.claims(path):
                return mount
        return self.fallback

    def dialect_for(self, path: bytes) -> Dialect:
        return self.mount_for(path).dialect

    def dialects(self) -> list[Dialect]:
        """Every dialect mounted here, the fallback first, each once."""
        seen: dict[int, Dialect] = {id(self.fallback.dialect): self.fallback.dialect}
        for mount in self._mounts:
            seen.setdefault(id(mount.dialect), mount.dialect)
        return list(seen.values())

    def render(self, request: Request) -> Any:
        path = request.path
        mount = self.mount_for(path)
        rest = path[len(mount.prefix) :].lstrip(b"/")
        request.prepath = mount.prefix.split(b"/")[1:] if mount.prefix else []
        request.postpath = rest.split(b"/") if rest else [b""]  # Klein: the mount point itself is "/"
        return mount.resource.render(request)
