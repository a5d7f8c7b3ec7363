"""Figures of a dataset, of its sparse operator and of a survey store (matplotlib, no display), and
the survey report page (static HTML with S/N thumbnails).

Every figure function returns a ``matplotlib.figure.Figure`` with an Agg canvas, built without
``pyplot``: no figure is registered in pyplot's global state, so a figure is freed when dropped and
scripts, Dask workers and tests need no display. ``fig.savefig("panel.png")`` writes it; in Jupyter
a figure that ends a cell is shown once ``%matplotlib inline`` is active.

Images follow the dataset conventions (DESIGN §3): arcsec axes with y up (row 0 at the top, drawn
with ``origin="upper"``), extents from the pixel-centre convention reaching half a pixel beyond
the outer pixel centres (:func:`extent_of`). Masked pixels (True = masked) are left blank. Data and
noise are labelled with their unit (the data HDU's ``BUNIT``, ``bunit=``), and drawn on an
``asinh``, ``percentile`` or ``linear`` colour scale (``stretch=``, :func:`image_norm`).

The report (``lenspipe report``): :func:`report_html` builds the page from
:class:`ReportEntry` values (pure), :mod:`pipeline.plots.thumbnails` draws the S/N thumbnails.
"""

from pipeline.plots.core import (
    NO_UNIT,
    STRETCHES,
    brightness_label,
    extent_of,
    image_norm,
    operator_units,
)
from pipeline.plots.dataset import dataset_panel
from pipeline.plots.operator import example_mapping_matrix, operator_panel, operator_row_window
from pipeline.plots.report import ReportEntry, ReportRow, group_rows, report_html
from pipeline.plots.survey import survey_overview
from pipeline.plots.thumbnails import (
    SnrNumbers,
    mask_outline,
    snr_map,
    snr_numbers,
    thumbnail_rgba,
    write_thumbnail,
)

__all__ = [
    "NO_UNIT",
    "STRETCHES",
    "ReportEntry",
    "ReportRow",
    "SnrNumbers",
    "brightness_label",
    "dataset_panel",
    "example_mapping_matrix",
    "extent_of",
    "group_rows",
    "image_norm",
    "mask_outline",
    "operator_panel",
    "operator_row_window",
    "operator_units",
    "report_html",
    "snr_map",
    "snr_numbers",
    "survey_overview",
    "thumbnail_rgba",
    "write_thumbnail",
]
