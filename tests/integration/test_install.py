"""After every kind of install, ``llamashim serve`` and ``twistd llamashim`` both work: a regular install (a wheel),
an editable one in pip's default mode (PEP 660) and in the compat mode. Each goes into a fresh virtualenv over a copy
of the source (``--no-deps --no-build-isolation``: the dependencies come from this test's own environment through a
``.pth`` line, so nothing is downloaded). The control case shows why ``setup.cfg`` says ``package_dir = =.``: without
it a PEP 660 install hides ``twisted/plugins`` from twistd — and ``llamashim serve`` still works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ("llamashim", "twisted", "setup.cfg", "pyproject.toml", "README.md")
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the new install


def copy_source(dest: Path, keep_package_dir: bool = True) -> Path:
    dest.mkdir()
    for name in SOURCE:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "dropin.cache"))
        else:
            shutil.copy(src, dest / name)
    if not keep_package_dir:
        cfg = dest / "setup.cfg"
        cfg.write_text(cfg.read_text().replace("package_dir =\n    = .\n", ""))
    return dest


def make_venv(path: Path) -> Path:
    """A virtualenv without pip whose sys.path ends with this environment's site-packages (pip, setuptools,
    Twisted and the rest); its own site-packages comes first, so what is installed there wins."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, env=CLEAN_ENV).stdout.strip()
    Path(site, "zz_outer_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def install(python: Path, source: Path, *mode: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", *mode, str(source)],
        capture_output=True, text=True, timeout=300, cwd=source.parent, env=CLEAN_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, env=CLEAN_ENV)


@pytest.mark.parametrize(
    "mode",
    [pytest.param([], id="wheel"), pytest.param(["-e"], id="editable-pep660"),
     pytest.param(["--config-settings", "editable_mode=compat", "-e"], id="editable-compat")],
)
def test_serve_and_twistd_work_after_the_install(mode: list[str], tmp_path: Path) -> None:
    """`llamashim serve --help` and `twistd llamashim --help` list the options, from a directory unrelated to the
    source; the code (and the status page) come from the new install."""
    source = copy_source(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    install(python, source, *mode)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    serve = run([str(python.parent / "llamashim"), "serve", "--help"], elsewhere)
    assert serve.returncode == 0 and "--listen" in serve.stdout and "--spawn-model" in serve.stdout, serve.stderr
    twistd = run([str(python), "-c", TWISTD, "llamashim", "--help"], elsewhere)
    assert twistd.returncode == 0 and "--listen" in twistd.stdout, twistd.stdout + twistd.stderr
    where = run([str(python), "-c", "import llamashim.web.status as s, llamashim; print(llamashim.__file__); "
                                    "print(len(s.PAGE))"], elsewhere)
    assert where.returncode == 0, where.stderr
    path, size = where.stdout.split()
    expected = source if mode else tmp_path / "venv"
    assert Path(path).is_relative_to(expected) and int(size) > 1000


def test_without_package_dir_pep660_hides_the_plugin_but_serve_still_works(tmp_path: Path) -> None:
    """The control: with setuptools' import-hook editable install (no `package_dir = =.`), twistd cannot find the
    plugin; `llamashim serve` adds it itself and works."""
    source = copy_source(tmp_path / "src", keep_package_dir=False)
    python = make_venv(tmp_path / "venv")
    install(python, source, "-e")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    twistd = run([str(python), "-c", TWISTD, "llamashim", "--help"], elsewhere)
    assert twistd.returncode != 0 and "Unknown command: llamashim" in twistd.stdout + twistd.stderr
    serve = run([str(python.parent / "llamashim"), "serve", "--help"], elsewhere)
    assert serve.returncode == 0 and "--listen" in serve.stdout, serve.stderr
