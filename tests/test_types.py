"""The package's type hints are checked: mypy over ``pipeline/`` (settings in pyproject.toml)
finds no error, so the shipped ``py.typed`` marker promises something true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mypy_finds_no_error_in_the_package():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", "/tmp/lenspipe-mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "pipeline" / "py.typed").exists()
