"""The ``llamashim`` command: one ``usage.Options`` with a subcommand each.

    llamashim serve [options]      run the daemon: exactly ``twistd --nodaemon --pidfile= llamashim [options]``
    llamashim doctor [URL]         what a llama-server can do, and which clients will work with it
    llamashim provision            a real llama-server and a tiny model, built and cached (what ./run uses)
    llamashim replay FILE          a recording (log.record) played through this llamashim, and what changed

``serve``'s options are twistd's own ``ServerOptions`` given ``--nodaemon --pidfile= llamashim`` first, and it runs
twistd's own ``runApp``, so it is twistd in every respect (options, help, logging, signals, exit status). It finds
the llamashim plugin the way twistd does and, when the install left ``twisted/plugins`` out of reach (a packaging
mishap), still adds it, so ``llamashim serve`` works wherever ``import llamashim`` does.

A subcommand's options parse its arguments, ``run()`` does the work and returns the exit status, and ``refuse()``
reports a usage error the way that command does (``serve`` as twistd: its help and the error on stdout, status 1;
the others one line on stderr, status 2).
"""

from __future__ import annotations

import getopt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NoReturn, Protocol

from twisted.application.service import ServiceMaker
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions, runApp  # type: ignore[attr-defined]  # the platform's, re-exported

from llamashim import __version__
from llamashim.config import ConfigError, load_config
from llamashim.ops.doctor_report import CLIENTS, client_named

# The plugin's own line (twisted/plugins/llamashim_plugin.py) says the same; this copy is used only when twistd's
# plugin discovery cannot see that file.
PLUGIN = ServiceMaker("llamashim", "llamashim.tap", "OpenAI/Ollama front end for llama.cpp's llama-server",
                      "llamashim")


class Command(Protocol):
    """What ``main`` asks of a subcommand's parsed options."""

    def run(self) -> int: ...

    def refuse(self, error: usage.UsageError) -> int: ...


# -- serve ---------------------------------------------------------------------------------------------------------


def twistd_argv(options: Sequence[str]) -> list[str]:
    """The twistd command line ``llamashim serve OPTIONS`` runs."""
    return ["--nodaemon", "--pidfile=", "llamashim", *options]


class ServeOptions(ServerOptions):
    """``llamashim serve OPTIONS``: twistd's options, parsed as ``twistd --nodaemon --pidfile= llamashim OPTIONS``."""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        super().parseOptions(twistd_argv(options or ()))

    def getSynopsis(self) -> str:
        return str(self.synopsis)  # twistd's own ("Usage: twistd [options]"): serve is twistd, not `llamashim serve`

    @property
    def subCommands(self) -> list[tuple[str, None, Any, str]]:
        """twistd's plugins, plus llamashim's when discovery missed it; ``runApp`` takes the plugin to run from
        ``loadedPlugins``, which twistd's ``subCommands`` fills."""
        commands = list(super().subCommands)
        if PLUGIN.tapname not in self.loadedPlugins:
            self.loadedPlugins[PLUGIN.tapname] = PLUGIN
            commands.append((PLUGIN.tapname, None, lambda: PLUGIN.options(), PLUGIN.description))
        return commands

    def run(self) -> int:
        runApp(self)
        return 0

    def refuse(self, error: usage.UsageError) -> int:
        print(self)  # as twistd does: the help of the (sub)command that failed, then the error
        print(f"llamashim serve: {error}")
        return 1


# -- doctor --------------------------------------------------------------------------------------------------------


class _Options(usage.Options):
    """``-h`` for ``--help``, and ``--version`` is llamashim's."""

    opt_h = usage.Options.opt_help

    def opt_version(self) -> NoReturn:
        """Display llamashim's version and exit."""
        print(f"llamashim {__version__}")
        raise SystemExit(0)


class _OneLineErrors(_Options):
    """A subcommand whose usage errors are one line on stderr and exit status 2, and whose options may follow its
    arguments (``llamashim doctor URL --json``), as GNU getopt allows and ``usage.Options`` alone does not."""

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        try:
            found, arguments = getopt.gnu_getopt(list(options or ()), self.shortOpt, self.longOpt)
        except getopt.GetoptError as e:
            raise usage.UsageError(str(e)) from None
        flat = [f"{o}={v}" if o.startswith("--") and f"{o[2:]}=" in self.longOpt else o + v for o, v in found]
        super().parseOptions([*flat, "--", *arguments])

    def refuse(self, error: usage.UsageError) -> int:
        command = f"llamashim {self.parent.subCommand}" if self.parent is not None else "llamashim"
        sys.stderr.write(f"{command}: {error}\n")
        return 2


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--timeout: {text!r} is not a number of seconds") from None


class DoctorOptions(_OneLineErrors):
    synopsis = "[options] [URL]"
    longdesc = (
        "Ask the llama-server at URL (default: the configured upstream, as `llamashim serve` would use it) what it "
        "can do (health, template capabilities, context per slot, a tiny tool call, streamed and not, embeddings, "
        "API key) and say which clients will work with it, naming the llama-server flag for each gap."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", None, None, "llamashim's YAML configuration, for the default URL and key"],
        ["api-key", None, None, "the key llama-server was started with (default: upstream.api_key)"],
        ["for", None, None, f"comma-separated clients that must work ({', '.join(CLIENTS)}); exit status 1 "
                            "otherwise"],
        ["timeout", None, 180.0, "seconds to wait for each answer", _seconds],
        ["ca-file", None, None, "trust this CA bundle for an https:// server"],
    ]
    optFlags: ClassVar[list[list[Any]]] = [
        ["json", None, "print the report as JSON"],
        ["quick", None, "skip the two tool-call probes (they run the model)"],
        ["insecure", None, "do not verify an https:// server's certificate"],
    ]

    def parseArgs(self, url: str | None = None) -> None:
        self["url"] = url

    def postOptions(self) -> None:
        if self["ca-file"] and self["insecure"]:
            raise usage.UsageError("--ca-file and --insecure cannot be used together")
        self["clients"] = [c.strip() for c in (self["for"] or "").split(",") if c.strip()]
        unknown = [c for c in self["clients"] if client_named(c) is None]
        if unknown:
            raise usage.UsageError(f"unknown client {unknown[0]!r} (known: {', '.join(CLIENTS)})")

    def run(self) -> int:
        try:
            url, key, verify = doctor_target(self, dict(os.environ))
        except (ConfigError, ValueError) as e:
            return self.refuse(usage.UsageError(str(e)))

        from twisted.internet.defer import Deferred
        from twisted.internet.task import react

        async def run(reactor: Any) -> None:
            raise SystemExit(await run_doctor(reactor, url, key, verify, self))

        try:
            react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
        except SystemExit as e:
            return int(e.code or 0)
        return 0


def doctor_target(options: Mapping[str, Any], environ: dict[str, str]) -> tuple[str, str | None, bool | str]:
    """(URL, API key, TLS verification) to probe: the arguments, else the configured (first) upstream."""
    verify: bool | str = options["ca-file"] or not options["insecure"]
    if options["url"]:
        return str(options["url"]).rstrip("/"), options["api-key"], verify
    config = load_config({"config": options["config"]}, environ)
    spec = config.upstream_specs()[0]
    if spec.url is None:
        raise ValueError("the configured upstream is spawned by llamashim (upstream.spawn); give the URL it "
                         "started it on (its log says `started llama-server ... on URL`)")
    verify = spec.verify if not (options["ca-file"] or options["insecure"]) else verify
    return spec.url, options["api-key"] or spec.api_key, verify


async def run_doctor(reactor: Any, url: str, key: str | None, verify: bool | str, options: Mapping[str, Any]) -> int:
    """Probe, judge, print; the exit status."""
    from llamashim.ops.doctor import probe
    from llamashim.ops.doctor_report import diagnose, exit_status

    if not options["json"] and not options["quick"]:
        sys.stderr.write(f"llamashim doctor: asking {url} (the two tool-call probes run the model; "
                         "a small one on a CPU takes a few seconds each)\n")
    report = diagnose(await probe(reactor, url, key, verify, options["timeout"], bool(options["quick"])))
    sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n" if options["json"] else report.text())
    sys.stdout.flush()
    return exit_status(report, list(options["clients"]))


# -- provision -----------------------------------------------------------------------------------------------------


class ProvisionOptions(_OneLineErrors):
    synopsis = "[options]"
    longdesc = (
        "Build and cache a real llama-server and a tiny model (what ./run uses), saying how far it got on stderr; "
        "print their paths as JSON."
    )
    optFlags: ClassVar[list[list[Any]]] = [["quiet", "q", "no progress lines"]]

    def run(self) -> int:
        from llamashim.testing import provision

        return provision.main(["--quiet"] if self["quiet"] else [])


# -- replay --------------------------------------------------------------------------------------------------------


class ReplayOptions(_OneLineErrors):
    synopsis = "FILE"
    longdesc = (
        "Play a recording (log.record) through this llamashim: the recorded upstream answers are served again, the "
        "client's request is sent again, and what the client gets now is compared with what it got then (ids and "
        "timestamps masked). Exit status 0 when it is the same, 1 when it differs."
    )

    def parseArgs(self, path: str | None = None) -> None:
        if path is None:
            raise usage.UsageError("which recording? (a FILE written under log.record)")
        self["path"] = path

    def run(self) -> int:
        from llamashim.replay import replay_file

        try:
            status, report = replay_file(self["path"])
        except (OSError, ValueError, KeyError) as e:
            return self.refuse(usage.UsageError(f"cannot replay {self['path']}: {e}"))
        print(report)
        return status


# -- the command ---------------------------------------------------------------------------------------------------


class Options(_Options):
    synopsis = "Usage: llamashim [options]"
    longdesc = "`llamashim COMMAND --help` says more."
    subCommands: ClassVar[list[list[Any]]] = [
        ["serve", None, ServeOptions, "run the daemon in the foreground (= twistd --nodaemon --pidfile= llamashim "
                                      "[options]; `llamashim serve --help` lists the options)"],
        ["doctor", None, DoctorOptions, "check a llama-server (default: the configured upstream) and say which "
                                        "clients will work"],
        ["provision", None, ProvisionOptions, "build and cache a real llama-server and a tiny model; prints their "
                                              "paths as JSON"],
        ["replay", None, ReplayOptions, "play a recording (log.record) through this llamashim and show what changed"],
    ]


def main(argv: Sequence[str] | None = None) -> int:
    options = Options()
    try:
        options.parseOptions(list(sys.argv[1:] if argv is None else argv))
    except usage.UsageError as e:
        command: Command | None = getattr(options, "subOptions", None)
        if command is not None:
            return command.refuse(e)
        sys.stderr.write(f"llamashim: {e}\n\n{options}")
        return 2
    if options.subCommand is None:
        sys.stdout.write(str(options))
        return 0
    chosen: Command = options.subOptions
    return chosen.run()


if __name__ == "__main__":
    raise SystemExit(main())
