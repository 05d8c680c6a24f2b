"""``twistd llamashim``: the command-line options and ``makeService``.

The options are built from :data:`llamashim.config.FLAGS`, where each flag is declared once (with its help, its
environment variable and the key it sets). Configuration errors are reported by :func:`makeService` as one line on
stderr and exit status 2 — not through ``usage.UsageError``, which would make twistd print its whole help page after
the message. What the machine does not allow (a port in use, a missing TLS key, a missing llama-server binary or
model: :mod:`llamashim.preflight`) is one ``cannot start`` line and exit status 1. Both happen before twistd starts
logging, writes a pid file or listens.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

from twisted.application.service import IService
from twisted.python import usage

from llamashim import preflight
from llamashim.config import FLAGS, Config, ConfigError, Flag, load_config


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "llamashim: makes OpenAI and Ollama clients work with llama.cpp's llama-server. "
        "Precedence: command line > environment > YAML file (--config) > defaults."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        [f.name, f.short, None, f.text] for f in FLAGS if f.name and not (f.switch or f.repeated)
    ]
    optFlags: ClassVar[list[list[Any]]] = [[f.name, f.short, f.text] for f in FLAGS if f.name and f.switch]

    def __init__(self) -> None:
        super().__init__()
        self.argv: list[str] = []  # as given: what a supervisor passes to its workers (server.workers)
        for flag in FLAGS:
            if flag.repeated:
                self[flag.name] = []

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        self.argv = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def cli(self) -> dict[str, Any]:
        """The options as :func:`llamashim.config.load_config` takes them."""
        return {
            f.key: bool(self[f.name]) if f.switch else list(self[f.name]) if f.repeated else self[f.name]
            for f in FLAGS
            if f.name
        }


def _append(flag: Flag) -> Callable[[Options, str], None]:
    """The ``opt_`` handler of a repeatable flag (``usage.Options`` has no repeatable parameter)."""

    def handler(self: Options, value: str) -> None:
        self[flag.name].append(value)

    handler.__doc__ = flag.text
    return handler


def _add_repeatable(options: type[Options]) -> None:
    for flag in FLAGS:
        if flag.name and flag.repeated:
            handler = _append(flag)
            for name in filter(None, (flag.name, flag.short)):  # one function: usage.Options sees synonyms
                setattr(options, "opt_" + name.replace("-", "_"), handler)


_add_repeatable(Options)


def fail(message: str, status: int = 2, what: str = "configuration error") -> NoReturn:
    sys.stderr.write(f"llamashim: {what}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(status)


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the daemon's service tree from the parsed options (the only place that may import the reactor)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    try:
        config = load_config(options.cli(), os.environ)
        config.api_keys()  # an unreadable keys file is a start-up error, not a runtime one
        return compose(config, reactor, options.argv, os.environ)
    except ConfigError as e:
        fail(str(e))
    except preflight.StartupError as e:
        fail(str(e), 1, "cannot start")


def compose(config: Config, reactor: Any, argv: Sequence[str], environ: Mapping[str, str]) -> IService:
    """One process (``server.workers: 1``), the supervisor of N workers, or — started by that supervisor — one of
    them (:mod:`llamashim.workers`). The machine is checked (:mod:`llamashim.preflight`) once, by the process that
    the user started."""
    from llamashim import workers
    from llamashim.service import build_member, build_service

    worker = workers.worker_from_env(environ, config.server.workers)
    if worker is not None:
        service = build_service(workers.worker_config(config, worker, environ), reactor, worker,
                                workers.inherited_fds(environ, config.listen))
        workers.SupervisorWatch(reactor).setServiceParent(service)
        return service
    preflight.check(config)
    if config.server.workers == 1:
        return build_service(config, reactor)  # parses the listeners' endpoint strings (service.listener)
    spawned = []  # the supervisor runs each supervised llama-server once, for every worker
    for spec in config.upstream_specs():
        if spec.spawn is not None:
            member = build_member(spec, reactor)
            assert member.supervisor is not None
            spawned.append((spec.name, member.client.base_url, member.supervisor))
    return workers.build_supervisor(config, reactor, argv, environ, spawned)
