"""Figures of a dataset, of its sparse operator and of a survey store (matplotlib, no display).

Every function returns a ``matplotlib.figure.Figure`` with an Agg canvas, built without
``pyplot``: no figure is registered in pyplot's global state, so a figure is freed when dropped and
scripts, Dask workers and tests need no display. ``fig.savefig("panel.png")`` writes it; in Jupyter
a figure that ends a cell is shown once ``%matplotlib inline`` is active.

Images follow the dataset conventions (DESIGN §3): arcsec axes with y up (row 0 at the top, drawn
with ``origin="upper"``), extents from the pixel-centre convention reaching half a pixel beyond
the outer pixel centres (:func:`extent_of`). Masked pixels (True = masked) are left blank.
"""

from pipeline.plots.core import BRIGHTNESS, W_UNITS, extent_of
from pipeline.plots.dataset import dataset_panel
from pipeline.plots.operator import example_mapping_matrix, operator_panel, operator_row_window
from pipeline.plots.survey import survey_overview

__all__ = [
    "BRIGHTNESS",
    "W_UNITS",
    "dataset_panel",
    "example_mapping_matrix",
    "extent_of",
    "operator_panel",
    "operator_row_window",
    "survey_overview",
]
