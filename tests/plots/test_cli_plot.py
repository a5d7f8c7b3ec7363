"""`lenspipe plot`: every kind of figure written to PNG, its defaults and its errors, its stretch
option and the units of the recorded BUNIT."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.cli.store import plot_figure
from tests.plots.support import BROKEN, PNG_SIGNATURE, main_axes, panel_title


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


def test_cli_plot_stretch_and_units_from_bunit(mef_store, tmp_path, capsys):
    output = tmp_path / "vis.png"
    code = main(["plot", mef_store, "lens0_VIS", "-o", str(output), "--stretch", "percentile"])
    assert code == 0, capsys.readouterr()
    assert output.read_bytes()[:8] == PNG_SIGNATURE
    assert main(["plot", mef_store, "lens0_VIS", "-o", str(output), "--stretch", "log"]) == 2
    assert "'log' is not one of" in capsys.readouterr().err
    # the unit of each band's BUNIT card, as the run recorded it
    for name, unit in (("lens0_VIS", "electron/s"), ("lens1_NIR_H", "MJy/sr")):
        figure = plot_figure(mef_store, name, stretch="linear")
        labels = {
            panel_title(ax): ax.images[0].colorbar.ax.get_ylabel() for ax in main_axes(figure)
        }
        assert labels["Data"] == labels["Noise map (RMS)"] == unit
        operator = plot_figure(mef_store, name, kind="operator")
        assert all(
            f"({unit})$^{{-2}}$" in ax.images[0].colorbar.ax.get_ylabel()
            for ax in main_axes(operator)
        )
    # the stretch reaches the figure: linear runs from the minimum to the maximum
    figure = plot_figure(mef_store, "lens0_VIS", stretch="linear")
    data = next(ax for ax in main_axes(figure) if panel_title(ax) == "Data").images[0]
    shown = np.ma.compressed(data.get_array())
    assert (data.norm.vmin, data.norm.vmax) == (shown.min(), shown.max())
