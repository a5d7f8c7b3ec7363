"""The survey figure: datasets per status, pixels per dataset, PSF sizes and task time per dataset,
from the attributes the store records (read through :mod:`pipeline.io.store`, loaded when called so
that the dataset and operator figures need no Zarr)."""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.plots.core import new_figure, no_data, panel_title

__all__ = ["survey_overview"]


def _describe_store(store: Any) -> str:
    return os.fspath(store) if isinstance(store, str | os.PathLike) else type(store).__name__


def survey_overview(store: Any, *, storage_options: dict | None = None) -> Figure:
    """Four panels of a survey store: datasets per status, pixels per dataset, PSF sizes, and the
    task time per dataset.

    Parameters
    ----------
    store
        A store location (path or fsspec URL), a ``zarr.abc.store.Store`` or an open group.
    storage_options
        For fsspec URLs (e.g. s3fs options).

    Returns
    -------
    Figure
        2×2 axes; the title summarises the store's last run.
    """
    from pipeline.io.store import DatasetRecord, DatasetStatus, survey_records

    records, last_run = survey_records(store, storage_options=storage_options)
    figure = new_figure(13.0, 9.0)
    (ax_status, ax_pixels), (ax_kernels, ax_time) = figure.subplots(2, 2)

    colours = {
        DatasetStatus.COMPLETE.value: "tab:green",
        DatasetStatus.PREPARED.value: "tab:orange",
        DatasetStatus.FAILED.value: "tab:red",
    }
    statuses = Counter(str(r.status) for r in records.values())
    order = list(colours)  # every status a store records, zeros shown too: "0 failed" is news
    order += sorted(s for s in statuses if s not in order)
    bars = ax_status.bar(
        order,
        [statuses[s] for s in order],
        color=[colours.get(s, "tab:gray") for s in order],
        width=0.5,
    )
    ax_status.bar_label(bars)
    ax_status.set_title(f"Datasets by status ({len(records)} in all)")
    ax_status.set_ylabel("datasets")
    ax_status.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not records:
        no_data(ax_status, "no datasets")

    pixels = np.array([r.n_pixels for r in records.values() if r.n_pixels is not None])
    if pixels.size:
        bins = int(np.clip(np.sqrt(pixels.size) * 2, 5, 40))
        ax_pixels.hist(pixels, bins=bins, color="tab:blue", edgecolor="white")
        ax_pixels.set_title(f"Unmasked pixels per dataset (median {int(np.median(pixels))})")
    else:
        ax_pixels.set_title("Unmasked pixels per dataset")
        no_data(ax_pixels, "no prepared datasets")
    ax_pixels.set_xlabel("unmasked pixels N")
    ax_pixels.set_ylabel("datasets")
    ax_pixels.yaxis.set_major_locator(MaxNLocator(integer=True))

    def kernel_label(record: DatasetRecord) -> str | None:
        shape = record.psf_shape
        return f"{shape[0]}×{shape[1]}" if shape else None

    kernels = Counter(k for k in map(kernel_label, records.values()) if k)
    labels = sorted(kernels, key=lambda k: tuple(int(v) for v in k.split("×")))
    bars = ax_kernels.bar(labels, [kernels[k] for k in labels], color="tab:purple", width=0.5)
    ax_kernels.bar_label(bars)
    ax_kernels.set_title("PSF kernel sizes")
    ax_kernels.set_xlabel("kernel (pixels)")
    ax_kernels.set_ylabel("datasets")
    ax_kernels.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not kernels:
        no_data(ax_kernels, "no prepared datasets")

    by_kernel: dict[str, list[tuple[float, float]]] = {}
    for r in records.values():
        seconds = sum(v for k, v in r.timings.items() if k.endswith("_seconds"))
        if r.timings and r.n_pixels is not None:
            by_kernel.setdefault(kernel_label(r) or "no PSF", []).append((r.n_pixels, seconds))
    for label in sorted(by_kernel, key=lambda k: (len(k), k)):
        points = np.array(by_kernel[label])
        ax_time.scatter(points[:, 0], points[:, 1], label=f"PSF {label}", alpha=0.8)
    if by_kernel:
        ax_time.legend(loc="upper left")
    else:
        no_data(ax_time, "no timings recorded")
    ax_time.set_title("Task time per dataset (prepare + operator batches)")
    ax_time.set_xlabel("unmasked pixels N")
    ax_time.set_ylabel("wall time of its tasks (s)")
    ax_time.set_ylim(bottom=0.0)

    title = f"Survey store {_describe_store(store)}"
    if last_run:
        title += (
            f"\nlast run {last_run.get('run_id')}: {last_run.get('complete', 0)} complete, "
            f"{last_run.get('failed', 0)} failed, {last_run.get('skipped_complete', 0)} skipped, "
            f"{float(last_run.get('wall_seconds', 0.0)):.1f} s wall"
        )
    panel_title(figure, title, fontsize=13.0)
    return figure
