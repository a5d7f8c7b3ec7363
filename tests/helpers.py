"""Test helpers: loading the reference cases computed by PyAutoArray (tests/data/c*/)."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATA_DIR = Path(__file__).parent / "data"
CASE_IDS = sorted(p.name for p in DATA_DIR.iterdir() if (p / "case.json").exists())


@dataclass
class ReferenceCase:
    """One reference case: its folder, its description (case.json) and expected outputs."""

    path: Path
    meta: dict
    expected: dict

    @property
    def pixel_scales(self) -> tuple[float, float]:
        return tuple(self.meta["pixel_scales"])

    @property
    def data_hdu(self) -> int:
        return int(self.meta.get("data_hdu", 0))

    def file(self, name: str) -> Path:
        return self.path / name


def load_case(case_id: str) -> ReferenceCase:
    path = DATA_DIR / case_id
    meta = json.loads((path / "case.json").read_text())
    with np.load(path / "expected.npz") as npz:
        expected = {k: npz[k] for k in npz.files}
    return ReferenceCase(path, meta, expected)


def probe_function(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The probe f(y, x) used by the reference cases (tests/data/README-cases.md calls it the
    test function)."""
    return np.exp(-((y - 0.1) ** 2 + 0.7 * (x + 0.05) ** 2) / 0.3) + 0.2 * np.sin(
        3 * x + 1
    ) * np.cos(2 * y)


def import_autoarray():
    """The reference library, or skip: for tests marked ``autoarray`` (run by ``.ci/run`` in its
    Python 3.12 environment, where it is installed)."""
    os.environ.pop("PYAUTO_SMALL_DATASETS", None)  # it crops and shrinks the reference's outputs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip("autoarray")


def quietly(function, *args, **kwargs):
    """``function(*args, **kwargs)`` with the reference library's warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)
