"""`lenspipe report` on a store made by a real `lenspipe run` (multi-extension FITS, two bands per
lens, one failed dataset), checked in a real headless Chromium: one thumbnail per complete
dataset, bands of a lens side by side, the failure listed with its reason, the sort orders of
``#sort=snr`` and ``#sort=pixels`` against S/N and pixels computed here from the store's arrays,
and a screenshot that shows something."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.cli import main
from pipeline.io.store import dataset_records, list_datasets, open_imaging
from tests.plots.browser import dump_dom, page_url, screenshot
from tests.plots.mef import BANDS, BROKEN_BAND
from tests.plots.page import read_page
from tests.plots.support import PNG_SIGNATURE


@pytest.fixture(scope="module")
def report(mef_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "site"
    assert main(["report", mef_store, "-o", str(out)]) == 0
    return out / "index.html"


@pytest.fixture(scope="module")
def measured(mef_store) -> dict[str, tuple[float, int]]:
    """(peak S/N, unmasked pixels) of each complete dataset, from its stored arrays."""
    found = {}
    for name, status in list_datasets(mef_store).items():
        if status == "complete":
            imaging = open_imaging(mef_store, name)
            mask = np.asarray(imaging.mask)
            snr = imaging.data.native[~mask] / imaging.noise_map.native[~mask]
            found[name] = (float(snr.max()), int((~mask).sum()))
    return found


def _expected_order(labels: list[str], measured: dict, index: int) -> list[str]:
    """Rows by descending key (the best peak S/N, or the pixels summed, of the complete datasets
    whose names are the row's label or start with it and "_"), rows without one last, ties and
    those by name: the page's rule, computed without the page."""
    keys = {}
    for label in labels:
        values = [v[index] for n, v in measured.items() if n == label or n.startswith(f"{label}_")]
        keys[label] = (max if index == 0 else sum)(values) if values else None
    known = sorted((k for k in labels if keys[k] is not None), key=lambda k: (-keys[k], k))
    return known + sorted(k for k in labels if keys[k] is None)


def test_report_in_a_browser(mef_store, report, measured):
    names = list_datasets(mef_store)
    failed = f"lens2_{BROKEN_BAND}"
    assert names[failed] == "failed" and len(measured) == 5

    default = read_page(dump_dom(page_url(report)))
    assert default.sheet["data-sorted"] == "name"  # the page's script ran
    assert default.external == [] and default.scripts == 1
    # exactly one thumbnail per complete dataset, each a PNG beside the page
    assert sorted(t["data-dataset"] for t in default.thumbs) == sorted(measured)
    for thumb in default.thumbs:
        assert (report.parent / thumb["src"]).read_bytes()[:8] == PNG_SIGNATURE
    # every dataset in one cell; bands of a lens side by side in its row, the failed one too
    # (it failed before its lens and band were recorded: placed by its name, <lens>_<band>)
    assert sorted(c["data-dataset"] for c in default.cells) == sorted(names)
    assert [r["data-name"] for r in default.rows] == ["lens0", "lens1", "lens2"]
    for lens in ("lens0", "lens1", "lens2"):
        row = [c["data-dataset"] for c in default.cells if c["row"] == lens]
        assert sorted(row) == sorted(f"{lens}_{band}" for band in BANDS)
    failed_cell = next(c for c in default.cells if c["data-dataset"] == failed)
    assert failed_cell["class"] == "cell failed"
    # the failure, with its reason as recorded
    record = dataset_records(mef_store)[failed]
    assert list(default.problems) == [failed]
    assert default.problems[failed] == f"{record.error_type}: {record.error}"
    assert "non-finite" in default.problems[failed]
    assert default.counts == {"complete": 5, "failed": 1}
    labels = [r["data-name"] for r in default.rows]
    assert labels == sorted(labels)  # by name until asked otherwise

    for fragment, index in (("sort=snr", 0), ("sort=pixels", 1)):
        page = read_page(dump_dom(page_url(report, fragment)))
        assert page.sheet["data-sorted"] == fragment.split("=")[1]
        order = [r["data-name"] for r in page.rows]
        assert order == _expected_order(labels, measured, index), fragment
        assert order != labels
    # the numbers shown are the measured ones (to the digits shown)
    for row in default.rows:
        values = [v for n, v in measured.items() if n.startswith(f"{row['data-name']}_")]
        if values:
            assert float(row["data-snr"]) == pytest.approx(max(v[0] for v in values), rel=1e-12)
            assert int(row["data-pixels"]) == sum(v[1] for v in values)


def test_report_screenshot(report, tmp_path):
    png = screenshot(page_url(report, "sort=snr"), tmp_path / "report.png", size=(1100, 1400))
    image = imread(png)
    assert image.shape[:2] == (1400, 1100)
    rgb = np.round(image[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 300, len(colours)  # text, badges and the thumbnails' colour maps
    # the thumbnails are on screen: the mask outline's red and cividis yellow both show
    assert ((rgb == (255, 64, 48)).all(axis=1)).sum() > 500
    assert ((rgb[:, 0] > 200) & (rgb[:, 1] > 180) & (rgb[:, 2] < 90)).sum() > 200
