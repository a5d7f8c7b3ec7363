"""The survey figure of a store with two complete datasets and one failed one."""

from __future__ import annotations

import numpy as np

from pipeline.io.store import open_store
from pipeline.plots import survey_overview
from tests.plots.support import save_png


def test_survey_overview(store, tmp_path):
    figure = survey_overview(store)
    save_png(figure, tmp_path / "survey.png")
    assert len(figure.axes) == 4
    status_ax, pixels_ax, kernels_ax, time_ax = figure.axes
    assert status_ax.get_title().startswith("Datasets by status")
    heights = {
        tick.get_text(): patch.get_height()
        for tick, patch in zip(status_ax.get_xticklabels(), status_ax.patches, strict=True)
    }
    assert heights == {"complete": 2, "prepared": 0, "failed": 1}
    assert pixels_ax.get_title().startswith("Unmasked pixels per dataset")
    assert sum(p.get_height() for p in pixels_ax.patches) == 2  # the failed one has no pixels
    kernel_counts = {
        tick.get_text(): patch.get_height()
        for tick, patch in zip(kernels_ax.get_xticklabels(), kernels_ax.patches, strict=True)
    }
    assert kernel_counts == {"5×5": 1, "7×7": 1}
    assert time_ax.get_title().startswith("Task time per dataset")
    points = np.concatenate([c.get_offsets() for c in time_ax.collections])
    assert points.shape == (2, 2) and np.all(np.isfinite(points)) and np.all(points[:, 1] > 0)
    last_run = open_store(store).attrs["last_run"]
    assert last_run["run_id"] in figure.get_suptitle()
