"""The systemd units: ``systemd-analyze verify`` accepts them, and they say what the README promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"


def installed_copy(tmp_path: Path) -> Path:
    """The units as installed, with /opt/llamashim/venv pointing at this checkout's venv (verify checks ExecStart)."""
    venv = Path(sys.executable).parent.parent
    out = tmp_path / "units"
    out.mkdir()
    for unit in ("llamashim.service", "llamashim.socket"):
        text = (UNITS / unit).read_text().replace("/opt/llamashim/venv", str(venv))
        (out / unit).write_text(text)
    return out


def test_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify accepts the service and socket units and reports nothing about them."""
    out = installed_copy(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(out / "llamashim.socket"), str(out / "llamashim.service")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "llamashim" in line]
    assert problems == [], problems


def test_service_is_hardened_and_uses_the_socket() -> None:
    """The service has the promised hardening, config path, socket listener and SIGTERM; the socket is loopback."""
    service = (UNITS / "llamashim.service").read_text()
    for setting in ("DynamicUser=yes", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                    "PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet=",
                    "--config /etc/llamashim/llamashim.yaml", "systemd:domain=INET:index=0", "KillSignal=SIGTERM"):
        assert setting in service
    socket = (UNITS / "llamashim.socket").read_text()
    assert "ListenStream=127.0.0.1:11434" in socket
