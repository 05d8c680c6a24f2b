"""What an upstream can do, in llama-server's own terms (pure): fill in the middle, unload a model.

:data:`FIM_PROBE` tells whether a model fills in the middle without generating anything: llama-server checks the FIM
tokens before it validates the body, so a body with a malformed ``input_extra`` gets 501 from a model without them
and 400 (``input_extra`` must be an array) from one with them. :func:`probe_result` reads that answer.

A router-mode llama-server (several models, loaded on demand) unloads one on ``POST`` :data:`UNLOAD`
``{"model": id}``. :class:`~llamashim.upstream.set.Member` does the asking and keeps the answers.
"""

from __future__ import annotations

from typing import Any

from llamashim.upstream.body import error_message

INFILL = b"/infill"
UNLOAD = b"/models/unload"

FIM_PROBE: dict[str, Any] = {"input_prefix": "", "input_suffix": "", "input_extra": 0, "n_predict": 0}


def probe_result(status: int, data: bytes) -> bool | None:
    """Whether the model fills in the middle, from llama-server's answer to :data:`FIM_PROBE` (``None``: it
    cannot be told from that answer, e.g. the upstream was loading)."""
    message = error_message(data)[0] if status != 200 else ""
    if status == 501 or "infill is not supported" in message.lower():
        return False
    if status == 200 or (status == 400 and "input_extra" in message):
        return True
    if status in (404, 405):
        return False  # not a llama-server with /infill
    return None
