"""The resource tree: which path goes to which routes object.

Each dialect's routes object is a Klein resource mounted at its path prefixes (``/api`` for Ollama,
``/v1/chat/completions`` for OpenAI chat, ...); a request goes to the longest mount its path is under, which sees
the rest of the path as its own (``/api/chat`` → the Ollama routes' ``/chat``). Everything else goes to llamashim's
own routes, which end in the pass-through.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.web.resource import IResource, Resource
from twisted.web.server import Request


class Root(Resource):
    isLeaf = True

    def __init__(self, mounts: Iterable[tuple[bytes, IResource]], fallback: IResource) -> None:
        super().__init__()
        self._mounts = sorted(((p.rstrip(b"/"), r) for p, r in mounts), key=lambda m: -len(m[0]))
        self._fallback = fallback

    def mount_for(self, path: bytes) -> tuple[bytes, IResource]:
        for prefix, resource in self._mounts:
            if path == prefix or path.startswith(prefix + b"/"):
                return prefix, resource
        return b"", self._fallback

    def render(self, request: Request) -> Any:
        path = request.path
        prefix, resource = self.mount_for(path)
        rest = path[len(prefix) :].lstrip(b"/")
        request.prepath = prefix.split(b"/")[1:] if prefix else []
        request.postpath = rest.split(b"/") if rest else [b""]  # Klein: the mount point itself is "/"
        return resource.render(request)
