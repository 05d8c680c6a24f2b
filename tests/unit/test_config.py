"""Configuration: precedence, every source, the seed config, and one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llamashim.config import AuthConfig, Config, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


def test_defaults() -> None:
    """With no flags, environment or file, every setting has its documented default value."""
    c = load_config({}, {})
    assert c == Config()
    assert c.listen == ("tcp:11434:interface=127.0.0.1",)
    assert c.upstream.url == "http://127.0.0.1:8080" and c.upstream.verify is True
    assert (c.upstream.connect_timeout, c.upstream.idle_timeout, c.upstream.request_timeout) == (10.0, 600.0, None)
    assert (c.tools.streaming, c.tools.chunk_size, c.tools.heartbeat) == ("auto", 50, 5.0)
    assert (c.thinking.mode, c.thinking.debug, c.thinking.prefix) == ("default", False, "💭 ")
    assert c.limits.max_body_bytes == 32 * 1024 * 1024
    assert (c.ollama.version, c.ollama.chat_dialect) == ("0.6.4", "ollama")
    assert c.log.verbose is False and c.log.format == "text"


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    """A CLI flag beats the environment, which beats the file; keys set only in the file still apply."""
    path = write(tmp_path, "upstream: {url: 'http://file:1'}\nthinking: {mode: events}\ntools: {streaming: native}\n")
    env = {"UPSTREAM": "http://env:2", "THINKING_MODE": "off"}
    c = load_config({"config": path, "upstream": "http://cli:3"}, env)
    assert c.upstream.url == "http://cli:3"
    assert c.thinking.mode == "off"
    assert c.tools.streaming == "native"
    c = load_config({"config": path}, env)
    assert c.upstream.url == "http://env:2"
    c = load_config({"config": path}, {})
    assert c.upstream.url == "http://file:1" and c.thinking.mode == "events"


@pytest.mark.parametrize(
    ("env", "check"),
    [
        ({"LISTEN_PORT": "9000"}, lambda c: c.listen == ("tcp:9000:interface=127.0.0.1",)),
        ({"LISTEN_HOST": "0.0.0.0", "LISTEN_PORT": "9000"}, lambda c: c.listen == ("tcp:9000:interface=0.0.0.0",)),
        ({"LISTEN_HOST": "::1"}, lambda c: c.listen == ("tcp:11434:interface=\\:\\:1",)),
        ({"UPSTREAM": "https://gpu:8443"}, lambda c: c.upstream.url == "https://gpu:8443"),
        ({"LLAMA_SERVER_PORT": "8081"}, lambda c: c.upstream.url == "http://127.0.0.1:8081"),
        ({"LLAMA_SERVER_PORT": "8081", "UPSTREAM": "http://u:1"}, lambda c: c.upstream.url == "http://u:1"),
        ({"THINKING_MODE": "show_reasoning"}, lambda c: c.thinking.mode == "show_reasoning"),
        ({"THINKING_MODE": "content"}, lambda c: c.thinking.mode == "show_reasoning"),
        ({"THINKING_DEBUG": "true"}, lambda c: c.thinking.debug is True),
        ({"THINKING_DEBUG": "0"}, lambda c: c.thinking.debug is False),
        ({"TOOL_STREAMING": "synthesize"}, lambda c: c.tools.streaming == "synthesize"),
        ({"VERBOSE": "1"}, lambda c: c.log.verbose is True),
        ({"LLAMASHIM_API_KEYS": "a-key-1,b-key-2"}, lambda c: c.api_keys() == ("a-key-1", "b-key-2")),
    ],
)
def test_environment(env: dict[str, str], check: Any) -> None:
    """Each environment variable sets its key (with aliases), and UPSTREAM wins over LLAMA_SERVER_PORT."""
    assert check(load_config({}, env))


def test_cli_flags(tmp_path: Path) -> None:
    """Repeated --listen, --ca-file, --insecure and --verbose set their keys; --ca-file with --insecure is an error."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    c = load_config({"listen": ["tcp:1:interface=127.0.0.1", "unix:/tmp/s"], "ca_file": str(ca), "verbose": True}, {})
    assert c.listen == ("tcp:1:interface=127.0.0.1", "unix:/tmp/s")
    assert c.upstream.verify == str(ca) and c.log.verbose
    assert load_config({"insecure": True}, {}).upstream.verify is False
    with pytest.raises(ConfigError, match="--ca-file and --insecure"):
        load_config({"insecure": True, "ca_file": str(ca)}, {})


def test_config_file_from_env_and_every_section(tmp_path: Path) -> None:
    """LLAMASHIM_CONFIG names the file; every section is read; api_keys_file adds keys, skipping comments."""
    keys = tmp_path / "keys"
    keys.write_text("# comment\nk-one-1234\n\nk-two-5678\n")
    path = write(
        tmp_path,
        f"""
listen: ["tcp:8000:interface=127.0.0.1"]
upstream: {{url: "http://h:9", verify: false, connect_timeout: 2, idle_timeout: 30, request_timeout: 60, api_key: up}}
tools: {{streaming: synthesize, chunk_size: 7, heartbeat: 1.5}}
thinking: {{mode: both, debug: true, prefix: "> ", separator: "\\n--\\n"}}
log: {{verbose: true, level: debug, format: json}}
limits: {{max_body_bytes: 1000, max_json_depth: 10, header_timeout: 5, max_concurrent_upstream: 4, max_queue: 2}}
ollama: {{version: "0.9.0", chat_dialect: openai}}
shutdown: {{drain_timeout: 3}}
server: {{heartbeat: 0, allowed_hosts: [gpu.example]}}
auth: {{api_keys: [k-zero-0000], api_keys_file: {keys}}}
cors: {{origins: ["https://app.example"]}}
metrics: {{enabled: false}}
""",
    )
    c = load_config({}, {"LLAMASHIM_CONFIG": path})
    assert c.listen == ("tcp:8000:interface=127.0.0.1",)
    assert c.upstream.url == "http://h:9" and c.upstream.verify is False and c.upstream.api_key == "up"
    assert (c.upstream.connect_timeout, c.upstream.idle_timeout, c.upstream.request_timeout) == (2, 30, 60)
    assert (c.tools.streaming, c.tools.chunk_size, c.tools.heartbeat) == ("synthesize", 7, 1.5)
    assert (c.thinking.mode, c.thinking.debug) == ("both", True)
    assert (c.thinking.prefix, c.thinking.separator) == ("> ", "\n--\n")
    assert (c.log.verbose, c.log.level, c.log.format) == (True, "debug", "json")
    assert (c.limits.max_body_bytes, c.limits.max_json_depth, c.limits.max_concurrent_upstream) == (1000, 10, 4)
    assert c.ollama.chat_dialect == "openai" and c.shutdown.drain_timeout == 3
    assert c.server.allowed_hosts == ("gpu.example",) and c.cors.origins == ("https://app.example",)
    assert c.api_keys() == ("k-zero-0000", "k-one-1234", "k-two-5678")
    assert c.metrics.enabled is False


def test_seed_proxy_config_is_accepted(tmp_path: Path) -> None:
    """The seed proxy's keys (proxy_port, target_url, verify_ssl, ...) map onto listen, upstream, tools, log."""
    path = write(
        tmp_path,
        'proxy_port: 8066\ntarget_url: "http://localhost:8080"\nverify_ssl: true\n'
        "streaming_chunk_size: 50\nrequest_timeout: 300\nlog_level: \"INFO\"\n",
    )
    c = load_config({"config": path}, {})
    assert c.listen == ("tcp:8066:interface=127.0.0.1",)
    assert c.upstream.url == "http://localhost:8080" and c.upstream.verify is True
    assert c.tools.chunk_size == 50 and c.upstream.request_timeout == 300 and c.log.level == "info"


def test_example_file_loads() -> None:
    """The shipped etc/llamashim.yaml loads without a configuration error."""
    c = load_config({"config": str(ROOT / "etc" / "llamashim.yaml")}, {})
    assert c.upstream.url is not None and c.upstream.url.startswith("http")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstream: {urll: http://x}\n", "unknown key upstream.urll"),
        ("upstreem: {url: http://x}\n", "unknown key upstreem"),
        ("upstream: {spawn: {model: m.gguf, bogus: 1}}\n", "unknown key upstream.spawn.bogus"),
        ("tools: {streaming: sometimes}\n", "tools.streaming"),
        ("tools: {chunk_size: 0}\n", "tools.chunk_size"),
        ("tools: {chunk_size: many}\n", "tools.chunk_size"),
        ("thinking: {debug: perhaps}\n", "thinking.debug"),
        ("upstream: {url: ftp://x}\n", "upstream.url"),
        ("upstream: {url: http://x:99999}\n", "upstream.url"),
        ("upstream: {url: 'http://x/v1'}\n", "without a path"),
        ("upstream: {verify: /no/such/ca.pem}\n", "does not exist"),
        ("upstream: {url: http://x, spawn: {model: m.gguf}}\n", "cannot be used together"),
        ("listen: [8080]\n", "listen"),
        ("limits: nope\n", "expected a mapping"),
        ("- a\n- b\n", "top level"),
        ("upstream: {url: [unclosed\n", "not valid YAML"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    """An unknown key, bad value or malformed file raises a one-line ConfigError naming the key or problem."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config({"config": path}, {})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_and_bad_env() -> None:
    """A missing config file, bad THINKING_MODE or LISTEN_PORT, or missing api_keys_file is a named ConfigError."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"config": "/no/such/file.yaml"}, {})
    with pytest.raises(ConfigError, match="THINKING_MODE"):
        load_config({}, {"THINKING_MODE": "loud"})
    with pytest.raises(ConfigError, match="LISTEN_PORT"):
        load_config({}, {"LISTEN_PORT": "http"})
    with pytest.raises(ConfigError, match="api_keys_file"):
        Config(auth=AuthConfig(api_keys_file="/no/keys")).api_keys()
