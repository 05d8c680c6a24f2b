"""The container files follow the README and pass hadolint (no Docker engine runs on these machines)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_passes_hadolint() -> None:
    """hadolint exits 0 on the Dockerfile."""
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_plugin_unprivileged() -> None:
    """The Dockerfile runs twistd llamashim in the foreground as user 10001 and exposes port 11434."""
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["twistd", "--nodaemon", "--pidfile=", "--logfile=-", "llamashim"]' in text
    assert "USER 10001" in text and "EXPOSE 11434" in text


def test_compose_file() -> None:
    """compose.yaml points llamashim at llama-server, publishes 11434 on loopback, and waits for its health."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    shim = compose["services"]["llamashim"]
    assert shim["environment"]["UPSTREAM"] == "http://llama-server:8080"
    assert shim["ports"] == ["127.0.0.1:11434:11434"]
    assert shim["depends_on"]["llama-server"]["condition"] == "service_healthy"
    assert "--port" in compose["services"]["llama-server"]["command"]
