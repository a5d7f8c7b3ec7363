"""`lenspipe plot`: every kind of figure written to PNG, its defaults and its errors."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from tests.plots.support import BROKEN, PNG_SIGNATURE


@pytest.mark.parametrize("kind", ["dataset", "operator", "survey"])
def test_cli_plot_writes_a_png(store, stored, tmp_path, kind, capsys):
    output = tmp_path / "out" / f"{kind}.png"
    code = main(["plot", store, stored.name, "-o", str(output), "--kind", kind, "--dpi", "40"])
    assert code == 0, capsys.readouterr()
    assert output.read_bytes()[:8] == PNG_SIGNATURE and output.stat().st_size > 2_000


def test_cli_plot_defaults_and_errors(store, stored, tmp_path, capsys):
    survey_png, dataset_png = tmp_path / "survey.png", tmp_path / "dataset.png"
    assert main(["plot", store, "-o", str(survey_png), "--dpi", "40"]) == 0  # no NAME: survey
    assert main(["plot", store, stored.name, "-o", str(dataset_png), "--dpi", "40"]) == 0
    assert survey_png.stat().st_size > 0 and dataset_png.stat().st_size > 0
    capsys.readouterr()
    assert main(["plot", store, "-o", str(tmp_path / "x.png"), "--kind", "operator"]) == 2
    assert "needs the dataset NAME" in capsys.readouterr().err
    assert main(["plot", store, BROKEN, "-o", str(tmp_path / "x.png")]) == 2
    assert "failed" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
