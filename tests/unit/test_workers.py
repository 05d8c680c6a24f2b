"""The pure parts of ``server.workers``: the daemon-wide limits divided among workers, the restart back-off, what a
worker is told through its environment, how the supervisor plans the listeners, and the worker board."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from llamashim import listeners, workers
from llamashim.config import ConfigError, UpstreamSpec, cores, load_config
from llamashim.ops.workers import WorkerBoard, WorkerInfo, restart_delay, share


@pytest.mark.parametrize(("limit", "n", "each"), [(None, 2, None), (8, 1, 8), (8, 2, 4), (7, 2, 4), (1, 2, 1),
                                                   (3, 4, 1), (10, 3, 4)])
def test_a_daemon_wide_limit_is_divided_rounding_up_and_at_least_one(limit: int | None, n: int, each: int) -> None:
    """Each worker gets ceil(limit / workers), never 0; no limit stays no limit."""
    assert share(limit, n) == each


def test_restart_back_off_doubles_to_thirty_seconds() -> None:
    """A worker dying again and again waits 1, 2, 4, 8, 16, then 30 s (and no more) before it is started again."""
    assert [restart_delay(n) for n in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert restart_delay(1000) == 30


def test_workers_key_takes_a_number_or_auto(tmp_path: Path) -> None:
    """server.workers: default 1, a number (flag or file), auto = the cores this process may use; 0 is refused."""
    assert load_config({}, {}).server.workers == 1
    assert load_config({"workers": "3"}, {}).server.workers == 3
    assert load_config({"workers": "auto"}, {}).server.workers == cores()
    path = tmp_path / "c.yaml"
    path.write_text("server: {workers: 2}\n")
    assert load_config({"config": str(path)}, {}).server.workers == 2
    with pytest.raises(ConfigError, match="--workers: must be at least 1"):
        load_config({"workers": "0"}, {})


def test_a_worker_runs_with_its_share_of_each_limit_and_the_supervisors_llama_server() -> None:
    """worker_config divides max_concurrent and limits.max_concurrent_upstream, and points a spawned upstream at
    the llama-server the supervisor runs."""
    config = load_config({"spawn_model": "/m.gguf", "workers": "2"}, {})
    config = replace(config, limits=replace(config.limits, max_concurrent_upstream=5))
    worker = WorkerInfo(1, 2, 123, "/tmp/x")
    mine = workers.worker_config(config, worker, {workers.UPSTREAMS_ENV: '{"default": "http://127.0.0.1:9"}'})
    assert mine.limits.max_concurrent_upstream == 3
    (spec,) = mine.upstream_specs()
    assert spec.url == "http://127.0.0.1:9" and spec.spawn is None
    listed = replace(config, upstreams=(UpstreamSpec(name="a", url="http://a:1", max_concurrent=4),
                                        UpstreamSpec(name="b", url="http://b:1")))
    specs = workers.worker_config(listed, worker, {}).upstream_specs()
    assert [(s.name, s.max_concurrent) for s in specs] == [("a", 2), ("b", None)]


def test_a_worker_knows_itself_and_its_sockets_from_its_environment() -> None:
    """LLAMASHIM_WORKER (with the shared directory) makes a worker; LLAMASHIM_WORKER_FDS names inherited sockets."""
    assert workers.worker_from_env({}, 2) is None
    info = workers.worker_from_env({workers.WORKER_ENV: "1", workers.MULTIPROC_ENV: "/d"}, 2)
    assert info is not None and (info.index, info.count, info.directory) == (1, 2, "/d")
    assert workers.inherited_fds({workers.FDS_ENV: ",7"}, ["a", "b"]) == [None, 7]
    assert workers.inherited_fds({}, ["a"]) == [None]


def test_listeners_are_planned_per_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    """tcp: each worker's own SO_REUSEPORT socket (or one the supervisor binds where that is missing); systemd: the
    handed-over descriptor; TLS and Unix sockets are refused with workers."""
    fds, held = workers.plan_listeners(["tcp:0:interface=127.0.0.1"], {})
    assert (fds, held) == ([None], [])
    assert workers.plan_listeners(["systemd:domain=INET:index=1"], {"LISTEN_FDS": "2"})[0] == [4]
    with pytest.raises(ConfigError, match="no socket at that index"):
        workers.plan_listeners(["systemd:domain=INET:index=0"], {})
    with pytest.raises(ConfigError, match="tcp:, tcp6: or systemd:"):
        workers.plan_listeners(["unix:/tmp/x.sock"], {})
    monkeypatch.setattr(listeners, "reuse_port_available", lambda: False)
    fds, held = workers.plan_listeners(["tcp:0:interface=127.0.0.1"], {})
    try:
        assert fds == [held[0].fileno()] and held[0].getsockname()[0] == "127.0.0.1"
    finally:
        for sock in held:
            sock.close()


def test_two_reuse_port_sockets_share_one_address() -> None:
    """What each worker opens: a second SO_REUSEPORT socket on the same address binds and listens."""
    first = listeners.bound_socket("tcp:0:interface=127.0.0.1", reuse_port=True)
    try:
        port = first.getsockname()[1]
        second = listeners.bound_socket(f"tcp:{port}:interface=127.0.0.1", reuse_port=True)
        second.close()
        with pytest.raises(OSError):  # without the option the address is taken
            listeners.bound_socket(f"tcp:{port}:interface=127.0.0.1", reuse_port=False).close()
    finally:
        first.close()
    assert listeners.tcp_address("tcp6:8080:backlog=5") == (socket.AF_INET6, "::", 8080, 5)


def test_the_board_has_a_line_per_live_worker(tmp_path: Path) -> None:
    """Each worker's line replaces its last one; a removed worker's line is gone; lines come by index."""
    board = WorkerBoard(str(tmp_path))
    board.publish(WorkerInfo(1, 2, 11, str(tmp_path)), lambda: {"in_flight": 3})
    board.publish(WorkerInfo(0, 2, 10, str(tmp_path)), lambda: {"in_flight": 0})
    board.publish(WorkerInfo(1, 2, 11, str(tmp_path)), lambda: {"in_flight": 1})
    assert [(w["index"], w["pid"], w["in_flight"]) for w in board.read()] == [(0, 10, 0), (1, 11, 1)]
    board.remove(0)
    assert [w["index"] for w in board.read()] == [1]
