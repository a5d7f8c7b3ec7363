"""`lenspipe report` as a command: what it writes for a store with a failed dataset, a rewrite of
an earlier report, a dataset damaged after it completed, and the folders it refuses."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from pipeline.cli import main
from pipeline.io.store import list_datasets, open_imaging
from pipeline.plots.thumbnails import snr_map, snr_numbers
from tests.plots.page import read_page
from tests.plots.support import BROKEN, PNG_SIGNATURE


def _page(out: Path):
    return read_page((out / "index.html").read_text(encoding="utf-8"))


def test_report_of_a_store(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", store, "-o", str(out), "--stretch", "percentile"]) == 0
    assert f"wrote {out / 'index.html'}" in capsys.readouterr().out
    page = _page(out)
    complete = sorted(n for n, s in list_datasets(store).items() if s == "complete")
    assert sorted(t["data-dataset"] for t in page.thumbs) == complete
    assert sorted(p.name for p in (out / "thumbs").iterdir()) == sorted(
        Path(t["src"]).name for t in page.thumbs
    )
    for thumb in page.thumbs:
        assert (out / thumb["src"]).read_bytes()[:8] == PNG_SIGNATURE
    assert list(page.problems) == [BROKEN] and "FitsReadError" in page.problems[BROKEN]
    assert page.sheet["class"] == "flat"  # no bands recorded: one dataset per row
    # the numbers on the page are those of the stored arrays
    text = (out / "index.html").read_text()
    for name in complete:
        imaging = open_imaging(store, name)
        numbers = snr_numbers(
            snr_map(imaging.data.native, imaging.noise_map.native, imaging.mask), imaging.mask
        )
        row = next(r for r in page.rows if r["data-name"] == name)
        assert float(row["data-snr"]) == numbers.peak
        assert int(row["data-pixels"]) == imaging.shape_slim == numbers.n_unmasked
        assert f'<b class="peak">{numbers.peak:,.1f}</b>' in text
    assert "on the percentile\ncolour scale" in text

    # again into the same folder: replaced, stale thumbnails gone
    (out / "thumbs" / "stale.png").write_bytes(b"old")
    assert main(["report", store, "-o", str(out)]) == 0
    assert not (out / "thumbs" / "stale.png").exists() and len(_page(out).thumbs) == 2


def test_a_dataset_damaged_after_it_completed_is_listed(store, tmp_path):
    copy = tmp_path / "survey.zarr"
    shutil.copytree(store, copy)
    name = next(n for n, s in list_datasets(copy).items() if s == "complete")
    chunks = [p for p in (copy / "datasets" / name / "data").rglob("*") if p.is_file()]
    chunks = [p for p in chunks if p.name != "zarr.json"]
    assert chunks
    for chunk in chunks:
        chunk.unlink()
    out = tmp_path / "report"
    assert main(["report", str(copy), "-o", str(out)]) == 0
    page = _page(out)
    assert name not in {t["data-dataset"] for t in page.thumbs} and len(page.thumbs) == 1
    assert set(page.problems) == {name, BROKEN}
    assert "missing" in page.problems[name] and name in page.problems[name]
    assert page.counts == {"complete": 1, "failed": 1, "damaged": 1}


def test_report_refuses_folders_it_could_damage(store, tmp_path, capsys):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("keep me")
    inside = Path(store) / "report"
    a_file = tmp_path / "file.html"
    a_file.write_text("x")
    for target, why in (
        (foreign, "not empty and holds no earlier lenspipe report"),
        (inside, "overlaps the store"),
        (a_file, "is a file"),
    ):
        assert main(["report", store, "-o", str(target)]) == 2
        assert why in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["todo.txt"]
    assert not inside.exists() and a_file.read_text() == "x"
    assert main(["report", str(tmp_path / "nowhere.zarr"), "-o", str(tmp_path / "r")]) == 2
    assert "no Zarr store" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_an_empty_folder_is_fine(store, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(["report", store, "-o", str(out)]) == 0
    assert np.all([p.suffix == ".png" for p in (out / "thumbs").iterdir()])
