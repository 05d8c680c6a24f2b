"""The status page in a real browser (headless Debian Chromium) while a real stream runs through llamashim: the
running stream appears in the page's table, the chart has data, and a screenshot is taken."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.e2e.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
         "--virtual-time-budget=5000", "--window-size=1280,1000", *args],
        capture_output=True, text=True, timeout=120,
    )


def post(url: str, body: dict[str, Any], timeout: float = 120) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return urllib.request.urlopen(request, timeout=timeout)


class Stream(threading.Thread):
    """A long streamed chat completion that says when its first chunk arrived and stops when told."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.started = threading.Event()
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"model": "any", "messages": [{"role": "user", "content": "Tell a very long story."}],
                "max_tokens": 2000, "ignore_eos": True, "stream": True}
        try:
            with post(self.url + "/v1/chat/completions", body) as response:
                for line in response:
                    if line.startswith(b"data: "):
                        self.started.set()
                    if self.stop.is_set():
                        break  # closing the connection stops the generation
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            self.started.set()


def test_the_status_page_shows_a_running_stream_and_the_chart(shim: Daemon, tmp_path: Path) -> None:
    """While a real stream runs, Chromium renders /status: the stream is a row of the active table (route chat),
    the finished request is in the recent table, the chart has samples and tokens; a screenshot is written."""
    assert os.access(CHROMIUM, os.X_OK), "Debian's chromium is needed (./run-tests installs it with apt)"
    with post(shim.url + "/v1/chat/completions",
              {"model": "any", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 24}) as r:
        assert json.load(r)["usage"]["completion_tokens"] > 0
    stream = Stream(shim.url)
    stream.start()
    try:
        assert stream.started.wait(120) and stream.error is None, stream.error
        dom = chromium(tmp_path / "profile", "--dump-dom", shim.url + "/status")
        assert dom.returncode == 0, dom.stderr[-2000:]
        html = dom.stdout
        active = re.search(r'<table id="active">.*?<tbody>(.*?)</tbody>', html, re.S)
        assert active is not None, html[:2000]
        rows = re.findall(r'<tr class="stream">(.*?)</tr>', active.group(1), re.S)
        assert rows and "<td>chat</td>" in rows[0] and "<td>openai</td>" in rows[0], active.group(1)
        recent = re.search(r'<table id="recent">.*?<tbody>(.*?)</tbody>', html, re.S)
        assert recent is not None and "<td>chat</td>" in recent.group(1)
        assert '<td class="ok">200</td>' in recent.group(1)
        chart = re.search(r'<svg id="chart"[^>]*>', html)
        assert chart is not None
        samples = re.search(r'data-samples="(\d+)"', chart.group(0))
        tokens = re.search(r'data-tokens="([\d.]+)"', chart.group(0))
        assert samples is not None and int(samples.group(1)) == 120
        assert tokens is not None and float(tokens.group(1)) > 0
        assert '<polyline id="tps"' in html and 'class="req"' in html
        shot = tmp_path / "status.png"
        result = chromium(tmp_path / "profile", f"--screenshot={shot}", shim.url + "/status")
        assert result.returncode == 0 and shot.stat().st_size > 20_000, result.stderr[-2000:]
        keep = os.environ.get("LLAMASHIM_STATUS_SCREENSHOT")  # e.g. docs/status.png, when refreshing the docs
        if keep:
            shutil.copy(shot, keep)
    finally:
        stream.stop.set()
        stream.join(30)
