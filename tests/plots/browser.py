"""A real headless browser for the report tests: Debian's Chromium (``apt-get install chromium``;
CI installs it in ``.ci/run``). Missing, it fails the test that needs it: never a skip.

Each call starts one browser process with its own throw-away profile, no network services and a
time limit, loads a ``file://`` page and returns its DOM after the page's script ran
(``--virtual-time-budget``) or writes a screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
TIMEOUT = 90  # seconds per browser process (a page of a few thumbnails loads in about one)
SCRIPT_BUDGET = "5000"  # virtual milliseconds for the page's script before the DOM is read


def chromium() -> str:
    """The Chromium executable; fails the test (with the fix) where there is none."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    if found is None:
        pytest.fail(
            "Chromium is needed for the report's browser test: apt-get install chromium "
            "(as .ci/run does)"
        )
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run Chromium in a session of its own, so that on a timeout the whole process group (its
    renderer and zygote processes too) is killed, not only the browser process."""
    with tempfile.TemporaryDirectory(
        prefix="lenspipe-chromium-", ignore_cleanup_errors=True
    ) as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HOME": profile},
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"Chromium did not finish within {TIMEOUT} s: {' '.join(command)}")
    assert process.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def page_url(index: Path, fragment: str = "") -> str:
    return index.resolve().as_uri() + (f"#{fragment}" if fragment else "")


def dump_dom(url: str) -> str:
    """The page's DOM, serialised after its script ran."""
    done = _run([f"--virtual-time-budget={SCRIPT_BUDGET}", "--dump-dom", url])
    assert "<html" in done.stdout, done.stderr[-3000:]
    return done.stdout


def screenshot(url: str, png: Path, size: tuple[int, int] = (1200, 900)) -> Path:
    """Write a PNG of the page's first ``size`` (width, height) pixels."""
    _run(
        [
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={SCRIPT_BUDGET}",
            f"--screenshot={png}",
            url,
        ]
    )
    assert png.is_file(), f"Chromium wrote no screenshot {png}"
    return png
