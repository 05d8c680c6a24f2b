"""The ``llamashim`` command.

    llamashim serve [options]      run the daemon: exactly ``twistd --nodaemon --pidfile= llamashim [options]``
    llamashim doctor [URL]         what a llama-server can do, and which clients will work with it
    llamashim provision            a real llama-server and a tiny model, built and cached (what ./run uses)

``serve`` parses twistd's own command line and runs twistd's own ``runApp``, so it is twistd in every respect
(options, logging, signals, exit status). It finds the llamashim plugin the way twistd does and, when the install
left ``twisted/plugins`` out of reach (a packaging mishap), still adds it, so ``llamashim serve`` works wherever
``import llamashim`` does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from llamashim import __version__

USAGE = """usage: llamashim COMMAND [options]

commands:
  serve [options]      run the daemon in the foreground (= twistd --nodaemon --pidfile= llamashim [options];
                       `llamashim serve --help` lists the options)
  doctor [URL]         check a llama-server (default: the configured upstream) and say which clients will work
  provision            build and cache a real llama-server and a tiny model; prints their paths as JSON

`llamashim COMMAND --help` says more.
"""

# The plugin's own line (twisted/plugins/llamashim_plugin.py) says the same; this copy is used only when twistd's
# plugin discovery cannot see that file.
PLUGIN_DESCRIPTION = "OpenAI/Ollama front end for llama.cpp's llama-server"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0
    if args[0] == "--version":
        print(f"llamashim {__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command == "serve":
        return serve(rest)
    if command == "doctor":
        return doctor(rest)
    if command == "provision":
        from llamashim.testing import provision

        return provision.main(rest)
    sys.stderr.write(f"llamashim: unknown command {command!r}\n\n{USAGE}")
    return 2


# -- serve ---------------------------------------------------------------------------------------------------------


def twistd_argv(options: Sequence[str]) -> list[str]:
    """The twistd command line ``llamashim serve OPTIONS`` runs."""
    return ["--nodaemon", "--pidfile=", "llamashim", *options]


def server_options() -> Any:
    """twistd's ``ServerOptions``, with the llamashim plugin added when plugin discovery did not find it."""
    from twisted.application.service import IServiceMaker, ServiceMaker
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]  # the platform's, re-exported

    class ServeOptions(ServerOptions):  # type: ignore[misc, valid-type]
        def _getPlugins(self, interface: Any, package: Any = None) -> list[Any]:
            found = list(super()._getPlugins(interface, package))
            if interface is IServiceMaker and not any(getattr(p, "tapname", None) == "llamashim" for p in found):
                found.append(ServiceMaker("llamashim", "llamashim.tap", PLUGIN_DESCRIPTION, "llamashim"))
            return found

    return ServeOptions()


def serve(options: Sequence[str]) -> int:
    """Run twistd exactly as ``twistd --nodaemon --pidfile= llamashim OPTIONS`` would."""
    from twisted.python import usage
    from twisted.scripts.twistd import runApp

    config = server_options()
    try:
        config.parseOptions(twistd_argv(options))
    except usage.error as e:
        print(config)
        print(f"llamashim serve: {e}")
        return 1
    runApp(config)
    return 0


# -- doctor --------------------------------------------------------------------------------------------------------


def doctor_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llamashim doctor",
        description="Ask a llama-server what it can do (health, template capabilities, context per slot, a tiny "
                    "tool call, streamed and not, embeddings, API key) and say which clients will work with it, "
                    "naming the llama-server flag for each gap.",
    )
    p.add_argument("url", nargs="?", help="llama-server's base URL (default: the configured upstream, "
                                          "as `llamashim serve` would use it)")
    p.add_argument("--config", help="llamashim's YAML configuration, for the default URL and key")
    p.add_argument("--api-key", help="the key llama-server was started with (default: upstream.api_key)")
    p.add_argument("--for", dest="clients", default="",
                   help="comma-separated clients that must work (copilot, codex, claude); exit status 1 otherwise")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quick", action="store_true", help="skip the two tool-call probes (they run the model)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each answer (default 180)")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ca-file", help="trust this CA bundle for an https:// server")
    tls.add_argument("--insecure", action="store_true", help="do not verify an https:// server's certificate")
    return p


def doctor_target(args: argparse.Namespace, environ: dict[str, str]) -> tuple[str, str | None, bool | str]:
    """(URL, API key, TLS verification) to probe: the arguments, else the configured (first) upstream."""
    from llamashim.config import load_config

    verify: bool | str = args.ca_file or not args.insecure
    if args.url:
        return args.url.rstrip("/"), args.api_key, verify
    config = load_config({"config": args.config}, environ)
    spec = config.upstream_specs()[0]
    if spec.url is None:
        raise ValueError("the configured upstream is spawned by llamashim (upstream.spawn); give the URL it "
                         "started it on (its log says `started llama-server ... on URL`)")
    verify = spec.verify if not (args.ca_file or args.insecure) else verify
    return spec.url, args.api_key or spec.api_key, verify


def doctor(argv: Sequence[str]) -> int:
    from llamashim.config import ConfigError
    from llamashim.ops.doctor_report import client_named

    args = doctor_parser().parse_args(argv)
    wanted = [c for c in args.clients.split(",") if c.strip()]
    unknown = [c for c in wanted if client_named(c) is None]
    if unknown:
        sys.stderr.write(f"llamashim doctor: unknown client {unknown[0]!r} (known: copilot, codex, claude)\n")
        return 2
    try:
        url, key, verify = doctor_target(args, dict(os.environ))
    except (ConfigError, ValueError) as e:
        sys.stderr.write(f"llamashim doctor: {e}\n")
        return 2

    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    async def run(reactor: Any) -> None:
        raise SystemExit(await run_doctor(reactor, url, key, verify, args, wanted))

    try:
        react(lambda reactor: Deferred.fromCoroutine(run(reactor)))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


async def run_doctor(reactor: Any, url: str, key: str | None, verify: bool | str, args: argparse.Namespace,
                     wanted: Sequence[str]) -> int:
    """Probe, judge, print; the exit status."""
    from llamashim.ops.doctor import probe
    from llamashim.ops.doctor_report import diagnose, exit_status

    if not args.json and not args.quick:
        sys.stderr.write(f"llamashim doctor: asking {url} (the two tool-call probes run the model; "
                         "a small one on a CPU takes a few seconds each)\n")
    report = diagnose(await probe(reactor, url, key, verify, args.timeout, args.quick))
    sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n" if args.json else report.text())
    sys.stdout.flush()
    return exit_status(report, list(wanted))


if __name__ == "__main__":
    raise SystemExit(main())
