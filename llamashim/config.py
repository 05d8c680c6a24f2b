"""Configuration: defaults < YAML file < environment < command line, validated strictly into frozen dataclasses.

Every key has one definition, a field of its section's dataclass (type, default, validator); an unknown key, a
value of the wrong type or a missing file is a :class:`ConfigError` whose one-line message names the key and where it
came from. The older stream-synthesis proxy's ``config.yaml`` keys (``proxy_port``, ``target_url``, ...) are accepted
and mapped.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from llamashim.modes import THINKING_ALIASES, THINKING_MODES, ReplayMode, ThinkingMode, ToolsMode

TOOL_MODES: tuple[ToolsMode, ...] = tuple(ToolsMode)
DEFAULT_LISTEN = "tcp:11434:interface=127.0.0.1"
DEFAULT_UPSTREAM = "http://127.0.0.1:8080"


class ConfigError(Exception):
    """A configuration problem, said in one line."""


@dataclass(frozen=True)
class SpawnConfig:
    model: str
    args: tuple[str, ...] = ()
    binary: str | None = None
    port: int | None = None


# -- validators: (value, where) -> normalised value, raising ConfigError ----------------------------------------------

Validator = Callable[[Any, str], Any]


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _number(minimum: float = 0.0, optional: bool = False) -> Validator:
    def check(value: Any, where: str) -> float | None:
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))):
            return None
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if number < minimum or number != number:
            raise ConfigError(f"{where}: must be at least {minimum:g}, got {value!r}")
        return number

    return check


def _int(minimum: int = 0, optional: bool = False) -> Validator:
    def check(value: Any, where: str) -> int | None:
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))):
            return None
        if isinstance(value, bool) or isinstance(value, float):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
        if number < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value!r}")
        return number

    return check


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


STORE_URL_SCHEMES = ("postgresql", "postgres")


def shown_url(url: str) -> str:
    """A database URL as it may be logged: no password (nor the query, where libpq also takes one)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    user = user.partition(":")[0]
    return f"{parts.scheme}://{user + '@' if user else ''}{host}{parts.path}"


def _store_url(value: Any, where: str) -> str | None:
    """``responses.store_url``: ``postgresql://user:password@host:port/database``. Never echoed back (a password)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a postgresql:// URL, got a {type(value).__name__}")
    url = value.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError:
        raise ConfigError(f"{where}: {shown_url(url)} is not a valid URL (its port?)") from None
    if parts.scheme not in STORE_URL_SCHEMES:
        raise ConfigError(f"{where}: expected a postgresql://user:password@host:port/database URL "
                          f"(scheme {parts.scheme or 'missing'})")
    if not parts.path.strip("/"):
        raise ConfigError(f"{where}: {shown_url(url)} names no database (postgresql://…/database)")
    return url


def _choice(choices: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> Validator:
    def check(value: Any, where: str) -> str:
        text = _str(value, where).strip().lower()
        text = (aliases or {}).get(text, text)
        if text not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
        return text

    return check


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return tuple(value)


def _opt_str_list(value: Any, where: str) -> tuple[str, ...] | None:
    return None if value is None else _str_list(value, where)


def _listen(value: Any, where: str) -> tuple[str, ...]:
    items = _str_list([value] if isinstance(value, str) else value, where)
    if not items:
        raise ConfigError(f"{where}: at least one listener is needed")
    for item in items:
        if ":" not in item:
            raise ConfigError(f"{where}: {item!r} is not an endpoint string (e.g. {DEFAULT_LISTEN})")
    return items


def _url(value: Any, where: str) -> str:
    text = _str(value, where).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: {value!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - validates the port number
    except ValueError:
        raise ConfigError(f"{where}: {value!r} has an invalid port") from None
    if parts.path.strip("/") or parts.query:
        raise ConfigError(f"{where}: {value!r} must be a base URL without a path (e.g. http://127.0.0.1:8080)")
    return text.rstrip("/")


def _verify(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return _bool(value, where)
    path = _str(value, where)
    if not os.path.exists(path):
        raise ConfigError(f"{where}: CA bundle {path!r} does not exist")
    return path


def _spawn(value: Any, where: str) -> SpawnConfig | None:
    if value is None:
        return None
    key, sep, source = where.partition(" in ")

    def at(name: str) -> str:
        return f"{key}.{name}{sep}{source}"

    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping with model, args, binary, port")
    unknown = set(value) - {"model", "args", "binary", "port"}
    if unknown:
        raise ConfigError(f"unknown key {at(sorted(unknown)[0])}")
    if "model" not in value:
        raise ConfigError(f"{at('model')}: the GGUF model file is required")
    model = _str(value["model"], at("model"))
    args = value.get("args") or []
    if isinstance(args, str):
        try:
            args = shlex.split(args)  # as a shell would: quoted paths with spaces stay one argument
        except ValueError as e:
            raise ConfigError(f"{at('args')}: cannot split {args!r}: {e}") from None
    port = _int(1, optional=True)(value.get("port"), at("port"))
    binary = _opt_str(value.get("binary"), at("binary"))
    return SpawnConfig(model, _str_list(args, at("args")), binary, port)


def _aliases(value: Any, where: str) -> tuple[tuple[str, str], ...]:
    """A mapping of glob pattern → model id, in the order written."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of pattern: model, got {value!r}")
    out = []
    for pattern, model in value.items():
        if not isinstance(pattern, str) or not isinstance(model, str):
            raise ConfigError(f"{where}: {pattern!r}: {model!r} — patterns and models must be strings")
        out.append((pattern, model))
    return tuple(out)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any, where: str) -> float:
    """Seconds, or a number with a unit: ``90s``, ``15m``, ``12h``, ``30d``."""
    if isinstance(value, str) and value.strip()[-1:].lower() in _UNITS:
        text = value.strip()
        return float(_number(0.001)(text[:-1], where)) * _UNITS[text[-1].lower()]
    return float(_number(0.001)(value, where))




def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _workers(value: Any, where: str) -> int:
    """``server.workers``: a whole number of worker processes, or ``auto`` (one per core)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return cores()
    number: int = _int(1)(value, where)
    return number


def key(default: Any, check: Validator, repr: bool = True) -> Any:
    """One configuration key: its default and its validator, declared once (the dataclass field); ``repr=False``
    for a secret."""
    return field(default=default, metadata={"check": check}, repr=repr)


def section(cls: type) -> Any:
    """One section of the file (``upstream:``, ``tools:``, ...), all defaults unless configured."""
    return field(default_factory=cls, metadata={"section": cls})


@dataclass(frozen=True, kw_only=True)
class UpstreamConfig:
    """``upstream:`` — the one upstream (``url``, or ``spawn``: a supervised llama-server) and its client settings,
    which are also every ``upstreams:`` entry's defaults."""

    url: str | None = key(DEFAULT_UPSTREAM, _url)  # None only in the spec of a spawned llama-server
    spawn: SpawnConfig | None = key(None, _spawn)
    verify: bool | str = key(True, _verify)
    connect_timeout: float = key(10.0, _number(0.001))
    idle_timeout: float | None = key(600.0, _number(0.001, optional=True))
    request_timeout: float | None = key(None, _number(0.001, optional=True))
    api_key: str | None = key(None, _opt_str)


@dataclass(frozen=True, kw_only=True)
class UpstreamSpec(UpstreamConfig):
    """One upstream llama-server: an ``upstreams:`` entry, or the one ``upstream:`` describes (named ``default``).
    Besides ``upstream:``'s keys (``url`` or ``spawn``, the client settings) it has a name, the models it serves
    (ids or globs; empty: whatever its ``/v1/models`` lists) and its own limit. Every field is an entry's key."""

    name: str = key("default", _str)
    models: tuple[str, ...] = key((), lambda value, where: _str_list(value or [], where))
    max_concurrent: int | None = key(None, _int(1, optional=True))  # requests at once before another is preferred

    @classmethod
    def inheriting(cls, defaults: UpstreamConfig, **values: Any) -> UpstreamSpec:
        """A spec with ``defaults``' client settings, except where ``values`` give its own."""
        return cls(**{**{f.name: getattr(defaults, f.name) for f in fields(UpstreamConfig)}, **values})


def _mode(kind: Callable[[str], Any], choices: tuple[str, ...], aliases: Mapping[str, str] | None = None) -> Validator:
    """One of ``choices`` (or an alias of one), as the ``StrEnum`` ``kind``."""
    check = _choice(choices, aliases)
    return lambda value, where: kind(check(value, where))


@dataclass(frozen=True)
class ToolsConfig:
    streaming: ToolsMode = key(ToolsMode.AUTO, _mode(ToolsMode, TOOL_MODES))
    chunk_size: int = key(50, _int(1))
    heartbeat: float = key(5.0, _number(0.0))
    max_calls: int = key(64, _int(1))  # tool calls in one answer before it is cut (a runaway model)
    max_repeats: int = key(8, _int(2))  # the same call, same arguments, this often: the answer is cut


@dataclass(frozen=True)
class ThinkingConfig:
    mode: ThinkingMode = key(ThinkingMode.DEFAULT, _mode(ThinkingMode, THINKING_MODES, THINKING_ALIASES))
    debug: bool = key(False, _bool)
    prefix: str = key("💭 ", _str)
    separator: str = key("\n\n---\n\n", _str)
    replay: ReplayMode = key(ReplayMode.AUTO, _mode(ReplayMode, tuple(ReplayMode)))


@dataclass(frozen=True)
class LogConfig:
    verbose: bool = key(False, _bool)
    level: str = key("info", _choice(("debug", "info", "warn", "error", "critical")))
    format: str = key("text", _choice(("text", "json")))
    record: str = key("", _str)  # a directory: every exchange written there (llamashim replay FILE plays one)
    record_max_bytes: int = key(256 * 1024 * 1024, _int(1))  # the oldest recordings go beyond this


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = key(32 * 1024 * 1024, _int(1))
    max_json_depth: int = key(64, _int(2))
    header_timeout: float = key(30.0, _number(0.001))
    max_concurrent_upstream: int | None = key(None, _int(1, optional=True))
    max_queue: int = key(64, _int(0))


@dataclass(frozen=True)
class OllamaConfig:
    version: str = key("0.6.4", _str)
    chat_dialect: str = key("ollama", _choice(("ollama", "openai")))


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout: float = key(30.0, _number(0.0))


@dataclass(frozen=True)
class ServerConfig:
    heartbeat: float = key(15.0, _number(0.0))
    allowed_hosts: tuple[str, ...] | None = key(None, _opt_str_list)  # None: loopback names + the listen addresses
    workers: int = key(1, _workers)  # worker processes (``auto``: one per core); 1: one process, no supervisor


@dataclass(frozen=True)
class AuthConfig:
    api_keys: tuple[str, ...] = key((), _str_list)
    api_keys_file: str | None = key(None, _opt_str)
    open_paths: tuple[str, ...] | None = key(None, _opt_str_list)  # None: the paths each dialect declares open


@dataclass(frozen=True)
class CorsConfig:
    origins: tuple[str, ...] = key((), _str_list)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = key(True, _bool)


@dataclass(frozen=True)
class ModelsConfig:
    default: str | None = key(None, _opt_str)  # for requests that name no model (or an alias with an empty target)
    aliases: tuple[tuple[str, str], ...] = key((), _aliases)  # (glob pattern, model id), first match wins


@dataclass(frozen=True)
class ResponsesConfig:
    store: bool = key(True, _bool)  # off: nothing is ever kept, whatever a request's ``store`` says
    store_path: str | None = key(None, _opt_str)  # None: $STATE_DIRECTORY (systemd) or ~/.local/state/llamashim
    store_url: str | None = key(None, _store_url, repr=False)  # postgresql://…: wins over store_path
    max_age: float = key(30 * 86400.0, _duration)  # seconds
    max_items: int = key(10_000, _int(1))


def _context_scaling(value: Any, where: str) -> int | Literal["auto"] | None:
    """``anthropic.context_scaling``: ``auto`` (or true), off (false), or the window the client assumes, in tokens."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or (isinstance(value, str) and not value.strip().isdigit()):
        try:
            return "auto" if _bool(value, where) else None
        except ConfigError:
            raise ConfigError(f"{where}: expected auto, true, false or a window in tokens, got {value!r}") from None
    window: int = _int(1000)(value, where)
    return window


@dataclass(frozen=True)
class AnthropicConfig:
    strip_billing_header: bool = key(True, _bool)
    # usage reported scaled from the model's real window to the one the client assumes, so Claude Code compacts
    # in time: auto (Claude Code's 200k, or 1M with the context-1m beta), off, or that window in tokens
    context_scaling: int | Literal["auto"] | None = key("auto", _context_scaling)


@dataclass(frozen=True)
class Config:
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    upstreams: tuple[UpstreamSpec, ...] = ()  # empty: the one upstream of ``upstream:`` (see upstream_specs)
    upstream: UpstreamConfig = section(UpstreamConfig)
    tools: ToolsConfig = section(ToolsConfig)
    thinking: ThinkingConfig = section(ThinkingConfig)
    log: LogConfig = section(LogConfig)
    limits: LimitsConfig = section(LimitsConfig)
    ollama: OllamaConfig = section(OllamaConfig)
    shutdown: ShutdownConfig = section(ShutdownConfig)
    server: ServerConfig = section(ServerConfig)
    auth: AuthConfig = section(AuthConfig)
    cors: CorsConfig = section(CorsConfig)
    metrics: MetricsConfig = section(MetricsConfig)
    models: ModelsConfig = section(ModelsConfig)
    responses: ResponsesConfig = section(ResponsesConfig)
    anthropic: AnthropicConfig = section(AnthropicConfig)

    def upstream_specs(self) -> tuple[UpstreamSpec, ...]:
        """Every upstream: the ``upstreams:`` list, or the one ``upstream:`` describes (named ``default``)."""
        if self.upstreams:
            return self.upstreams
        u = self.upstream
        # (limits.max_concurrent_upstream already holds the one upstream's requests, with its queue and 429)
        return (UpstreamSpec.inheriting(u, url=None if u.spawn is not None else u.url),)

    def api_keys(self) -> tuple[str, ...]:
        """Every configured API key: ``auth.api_keys`` plus the lines of ``auth.api_keys_file``."""
        keys = list(self.auth.api_keys)
        if self.auth.api_keys_file:
            keys.extend(read_keys_file(self.auth.api_keys_file))
        return tuple(k for k in keys if k)



def _schema() -> dict[str, dict[str, Validator]]:
    out: dict[str, dict[str, Validator]] = {}
    for sec in fields(Config):
        cls = sec.metadata.get("section")
        if cls is not None:
            out[sec.name] = {f.name: f.metadata["check"] for f in fields(cls)}
    return out


# section -> key -> validator, read off the dataclasses above (each key is declared once, with its default).
SCHEMA: dict[str, dict[str, Validator]] = _schema()
TOP_LEVEL = {"listen", "upstreams"}
UPSTREAM_ENTRY_KEYS = tuple(f.name for f in fields(UpstreamSpec))


def _upstreams(value: Any, where: str, defaults: UpstreamConfig) -> tuple[UpstreamSpec, ...]:
    """The ``upstreams:`` list; ``upstream:``'s client settings are each entry's defaults."""
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of upstreams (name, url or spawn, ...)")
    specs: list[UpstreamSpec] = []
    source = where.removeprefix("upstreams")  # " in FILE", or "" for a value from elsewhere
    for i, entry in enumerate(value):
        specs.append(_upstream_entry(entry, f"upstreams[{i}]", source, defaults, {s.name for s in specs}))
    return tuple(specs)


def _upstream_entry(entry: Any, at: str, source: str, defaults: UpstreamConfig, taken: set[str]) -> UpstreamSpec:
    """One ``upstreams:`` entry (``at``: ``upstreams[i]``), each key checked by its field's validator."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}{source}: expected a mapping with name and url or spawn")
    unknown = sorted(set(entry) - set(UPSTREAM_ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{at}{source}: unknown key {unknown[0]!r} (known: {', '.join(UPSTREAM_ENTRY_KEYS)})")
    name = _str(entry["name"], f"{at}.name{source}").strip() if "name" in entry else ""
    if not name:
        raise ConfigError(f"{at}{source}: every upstream needs a name")
    if name in taken:
        raise ConfigError(f"{at}{source}: the name {name!r} is used twice")
    values: dict[str, Any] = {"name": name, "url": None, "spawn": None}  # an entry names its own url or spawn
    for f in fields(UpstreamSpec):
        if f.name in entry and f.name != "name" and not (f.name == "url" and entry["url"] is None):
            values[f.name] = f.metadata["check"](entry[f.name], f"{at}.{f.name}{source}")
    if (values["url"] is None) == (values["spawn"] is None):
        raise ConfigError(f"{at}{source} ({name}): give either url or spawn")
    return UpstreamSpec.inheriting(defaults, **values)


# The stream-synthesis proxy's config.yaml (shared/seeds/001): its keys and where they land.
SEED_KEYS: dict[str, tuple[str, str] | str] = {
    "proxy_port": "listen",
    "target_url": ("upstream", "url"),
    "verify_ssl": ("upstream", "verify"),
    "streaming_chunk_size": ("tools", "chunk_size"),
    "request_timeout": ("upstream", "request_timeout"),
    "log_level": ("log", "level"),
}


def read_keys_file(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as e:
        raise ConfigError(f"auth.api_keys_file: cannot read {path!r}: {e.strerror}") from None


def _flatten_file(data: Any, source: str) -> dict[tuple[str, str], tuple[Any, str]]:
    """YAML document → {(section, key): (value, where)}, rejecting unknown keys."""
    out: dict[tuple[str, str], tuple[Any, str]] = {}
    if data is None:
        return out
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    for name, value in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"{source}: key {name!r} is not a string")
        if name in TOP_LEVEL:
            out[("", name)] = (value, f"{name} in {source}")
        elif name in SEED_KEYS:
            target = SEED_KEYS[name]
            where = f"{name} in {source}"
            if name == "proxy_port":
                port = _int(1)(value, where)
                out[("", "listen")] = ([f"tcp:{port}:interface=127.0.0.1"], where)
            elif name == "log_level":
                assert isinstance(target, tuple)
                out[target] = (str(value).lower(), where)
            else:
                assert isinstance(target, tuple)
                out[target] = (value, where)
        elif name in SCHEMA:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{name} in {source}: expected a mapping, got {value!r}")
            for key, sub in value.items():
                if key not in SCHEMA[name]:
                    raise ConfigError(f"unknown key {name}.{key} in {source}")
                out[(name, key)] = (sub, f"{name}.{key} in {source}")
        else:
            raise ConfigError(f"unknown key {name} in {source}")
    return out


# -- the command line and the environment: every flag and variable declared once ----------------------------------


@dataclass(frozen=True)
class Flag:
    """One outside name of a setting: a command-line flag (``--name``), an environment variable, or both.

    ``tap.Options`` is built from :data:`FLAGS` (name, short name, help) and so are the command-line and environment
    layers of :func:`load_config`, whose ``cli`` mapping holds each flag under :attr:`key`."""

    name: str  # the flag without ``--``; "": an environment variable only
    target: tuple[str, str] | None  # the (section, key) it sets, section "" at the top level; None: read elsewhere
    help: str = ""  # "{env}" stands for the environment variable's name
    env: str | None = None
    short: str | None = None
    switch: bool = False  # takes no value
    repeated: bool = False  # may be given more than once; its values are a list
    # The key's value from the flag's (given, not empty) and the whole command line's; None: the flag's value.
    value: Callable[[Any, Mapping[str, Any]], Any] | None = None

    @property
    def key(self) -> str:
        """The flag's key in :func:`load_config`'s ``cli`` mapping: ``spawn-model`` → ``spawn_model``."""
        return self.name.replace("-", "_")

    @property
    def text(self) -> str:
        """The help, as ``--help`` shows it."""
        return self.help.format(env=self.env)


CONFIG_FLAG = Flag("config", None, "YAML configuration file (env {env}).", env="LLAMASHIM_CONFIG", short="c")
SPAWN_ARGS_FLAG = Flag("spawn-args", None, "Extra llama-server arguments for --spawn-model, one string.")

# In --help the flags come sorted; two flags for one key cannot be given together (--ca-file, --insecure).
FLAGS: tuple[Flag, ...] = (
    CONFIG_FLAG,
    Flag("listen", ("", "listen"), f"Listen on this Twisted endpoint (repeatable; default {DEFAULT_LISTEN}).",
         short="l", repeated=True),
    Flag("upstream", ("upstream", "url"), f"Base URL of llama-server (env {{env}}; default {DEFAULT_UPSTREAM}).",
         env="UPSTREAM", short="u"),
    Flag("ca-file", ("upstream", "verify"),
         "Trust this CA bundle (PEM) for an https upstream (upstream.verify: PATH)."),
    Flag("insecure", ("upstream", "verify"),
         "Do not verify the upstream's TLS certificate (upstream.verify: false). Logged loudly.",
         short="k", switch=True, value=lambda _on, _cli: False),
    Flag("thinking-mode", ("thinking", "mode"), f"Reasoning routing: {', '.join(THINKING_MODES)} (env {{env}}).",
         env="THINKING_MODE"),
    Flag("", ("thinking", "debug"), env="THINKING_DEBUG"),
    Flag("tool-streaming", ("tools", "streaming"), f"Tool-call streaming: {', '.join(TOOL_MODES)} (env {{env}}).",
         env="TOOL_STREAMING"),
    Flag("verbose", ("log", "verbose"), "Log request and response bodies (env {env}=1).", env="VERBOSE",
         short="v", switch=True),
    Flag("spawn-model", ("upstream", "spawn"),
         "Start and supervise llama-server on this GGUF file (upstream.spawn.model).",
         value=lambda model, cli: {"model": model, "args": cli.get(SPAWN_ARGS_FLAG.key) or ""}),
    SPAWN_ARGS_FLAG,
    Flag("", ("auth", "api_keys"), env="LLAMASHIM_API_KEYS"),
    Flag("workers", ("server", "workers"),
         "Worker processes: a number, or auto (one per core); default 1 (server.workers)."),
)


def _from_env(environ: Mapping[str, str]) -> dict[tuple[str, str], tuple[Any, str]]:
    out: dict[tuple[str, str], tuple[Any, str]] = {}
    for flag in FLAGS:
        if flag.env and flag.target and environ.get(flag.env) not in (None, ""):
            out[flag.target] = (environ[flag.env], flag.env)
    # Variables that make a value from parts, each only when the key's own variable is not set.
    host, port = environ.get("LISTEN_HOST"), environ.get("LISTEN_PORT")
    if (host or port) and ("", "listen") not in out:
        p = _int(1)(port or "11434", "LISTEN_PORT")
        h = (host or "127.0.0.1").replace(":", "\\:")
        out[("", "listen")] = ([f"tcp:{p}:interface={h}"], "LISTEN_HOST/LISTEN_PORT")
    if environ.get("LLAMA_SERVER_PORT") and ("upstream", "url") not in out:
        p = _int(1)(environ["LLAMA_SERVER_PORT"], "LLAMA_SERVER_PORT")
        out[("upstream", "url")] = (f"http://127.0.0.1:{p}", "LLAMA_SERVER_PORT")
    return out


def _from_cli(cli: Mapping[str, Any]) -> dict[tuple[str, str], tuple[Any, str]]:
    out: dict[tuple[str, str], tuple[Any, str]] = {}
    for flag in FLAGS:
        value = cli.get(flag.key) if flag.name else None
        if flag.target is None or value is None or value is False or value in ("", [], ()):
            continue
        where = f"--{flag.name}"
        if flag.target in out:
            raise ConfigError(f"{out[flag.target][1]} and {where} cannot be used together")
        out[flag.target] = (flag.value(value, cli) if flag.value else value, where)
    return out


def load_file(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None


def load_config(cli: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Merge and validate: command line > environment > YAML file > defaults."""
    path = cli.get(CONFIG_FLAG.key) or environ.get(str(CONFIG_FLAG.env))
    merged: dict[tuple[str, str], tuple[Any, str]] = {}
    if path:
        merged.update(_flatten_file(load_file(str(path)), str(path)))
    merged.update(_from_env(environ))
    merged.update(_from_cli(cli))
    return build(merged)


def build(merged: Mapping[tuple[str, str], tuple[Any, str]]) -> Config:
    sections: dict[str, dict[str, Any]] = {name: {} for name in SCHEMA}
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    upstreams_value: tuple[Any, str] | None = None
    for (name, key_name), (value, where) in merged.items():
        if name == "":
            if key_name == "upstreams":
                upstreams_value = (value, where)
            else:
                listen = _listen(value, where)
            continue
        sections[name][key_name] = SCHEMA[name][key_name](value, where)
    up = sections["upstream"]
    if up.get("spawn") is not None and ("upstream", "url") in merged:
        raise ConfigError(
            f"upstream.url ({merged[('upstream', 'url')][1]}) and upstream.spawn cannot be used together: "
            "a spawned llama-server is the upstream"
        )
    classes = {f.name: f.metadata["section"] for f in fields(Config) if "section" in f.metadata}
    built = {name: classes[name](**values) for name, values in sections.items()}
    upstreams: tuple[UpstreamSpec, ...] = ()
    if upstreams_value is not None:
        for key_name in ("url", "spawn"):
            if ("upstream", key_name) in merged:
                raise ConfigError(
                    f"upstreams ({upstreams_value[1]}) and upstream.{key_name} ({merged[('upstream', key_name)][1]}) "
                    "cannot be used together: upstream: is the one-upstream shorthand"
                )
        upstreams = _upstreams(upstreams_value[0], upstreams_value[1], built["upstream"])
    return Config(listen=listen, upstreams=upstreams, **built)
