"""``twistd llamashim``: the command-line options and ``makeService``.

Configuration errors are reported by :func:`makeService` as one line on stderr and exit status 2 — not through
``usage.UsageError``, which would make twistd print its whole help page after the message. What the machine does
not allow (a port in use, a missing TLS key, a missing llama-server binary or model: :mod:`llamashim.preflight`) is
one ``cannot start`` line and exit status 1. Both happen before twistd starts logging, writes a pid file or listens.
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage

from llamashim import preflight
from llamashim.config import TOOL_MODES, ConfigError, load_config
from llamashim.modes import THINKING_MODES


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "llamashim: makes OpenAI and Ollama clients work with llama.cpp's llama-server. "
        "Precedence: command line > environment > YAML file (--config) > defaults."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, "YAML configuration file (env LLAMASHIM_CONFIG)."],
        ["upstream", "u", None, "Base URL of llama-server (env UPSTREAM; default http://127.0.0.1:8080)."],
        ["ca-file", None, None, "Trust this CA bundle (PEM) for an https upstream (upstream.verify: PATH)."],
        ["thinking-mode", None, None, f"Reasoning routing: {', '.join(THINKING_MODES)} (env THINKING_MODE)."],
        ["tool-streaming", None, None, f"Tool-call streaming: {', '.join(TOOL_MODES)} (env TOOL_STREAMING)."],
        ["spawn-model", None, None, "Start and supervise llama-server on this GGUF file (upstream.spawn.model)."],
        ["spawn-args", None, None, "Extra llama-server arguments for --spawn-model, one string."],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        ["insecure", "k", "Do not verify the upstream's TLS certificate (upstream.verify: false). Logged loudly."],
        ["verbose", "v", "Log request and response bodies (env VERBOSE=1)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint (repeatable; default tcp:11434:interface=127.0.0.1)."""
        self["listen"].append(endpoint)

    opt_l = opt_listen

    def cli(self) -> dict[str, Any]:
        """The options as :func:`llamashim.config.load_config` takes them."""
        return {
            "config": self["config"],
            "listen": list(self["listen"]),
            "upstream": self["upstream"],
            "ca_file": self["ca-file"],
            "insecure": bool(self["insecure"]),
            "thinking_mode": self["thinking-mode"],
            "tool_streaming": self["tool-streaming"],
            "verbose": bool(self["verbose"]),
            "spawn_model": self["spawn-model"],
            "spawn_args": self["spawn-args"],
        }


def fail(message: str, status: int = 2, what: str = "configuration error") -> None:
    sys.stderr.write(f"llamashim: {what}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the daemon's service tree from the parsed options (the only place that may import the reactor)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    from twisted.internet.endpoints import serverFromString

    from llamashim.service import build_service

    try:
        config = load_config(options.cli(), os.environ)
        preflight.check(config)
        for description in config.listen:
            try:
                serverFromString(reactor, description)
            except IndexError:
                raise ConfigError(
                    f"listener {description!r}: systemd handed over no socket at that index (LISTEN_FDS); "
                    "start it through its .socket unit"
                ) from None
            except (ValueError, TypeError, KeyError) as e:
                raise ConfigError(f"listener {description!r} is not a valid endpoint: {e}") from None
            except Exception as e:  # e.g. OpenSSL's errors for TLS files the preflight did not foresee
                raise preflight.StartupError(f"listener {description!r} cannot be set up: {e}") from None
        config.api_keys()  # an unreadable keys file is a start-up error, not a runtime one
    except ConfigError as e:
        fail(str(e))
    except preflight.StartupError as e:
        fail(str(e), 1, "cannot start")
    return build_service(config, reactor)
