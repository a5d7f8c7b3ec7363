"""``lenspipe report STORE -o DIR``: a static HTML page of a survey store (``DIR/index.html`` and
``DIR/thumbs/*.png``; open it in any browser, no server needed).

This module does the reading and writing; the page is built by
:func:`pipeline.plots.report_html` and the S/N thumbnails are drawn by
:mod:`pipeline.plots.thumbnails`. Each complete dataset's data, noise map and mask are read once
(threads: a store on S3 reads concurrently); nothing in the store is written.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from pipeline.cli.store import bad_pixel_total, failure_reason, status_of
from pipeline.exc import StoreError

if TYPE_CHECKING:
    from pipeline.io.store import DatasetRecord
    from pipeline.plots import ReportEntry, SnrNumbers

__all__ = ["report", "write_report"]

INDEX = "index.html"
THUMBS = "thumbs"
_NOT_COMPLETE = {
    "prepared": "prepared, not complete: operator batches remain; `lenspipe run` on its config "
    "resumes it",
    "preparing": "no status recorded: its prepare is running or was cut; `lenspipe run` on its "
    "config prepares it again",
    "damaged": "its recorded status is not one lenspipe writes; rerun `lenspipe run CONFIG "
    "--verify` to repair it",
}


def check_report_folder(out: Path, store: str) -> None:
    """Refuse (``click.UsageError``) a report folder that is inside the store (or is it, or holds
    it), or that exists and is neither empty nor an earlier report: writing there could
    overwrite what is not the report's."""
    from pipeline.io.store import store_overlaps
    from pipeline.plots.report import GENERATOR

    if store_overlaps(store, [out]):
        raise click.UsageError(
            f"report folder '{out}' overlaps the store {store!r}: choose a folder outside it"
        )
    if out.exists() and not out.is_dir():
        raise click.UsageError(f"report folder '{out}' is an existing file: choose a folder")
    if out.is_dir() and any(out.iterdir()):
        index = out / INDEX
        earlier = index.is_file() and f'content="{GENERATOR}"' in index.read_text(errors="replace")
        if not earlier:
            raise click.UsageError(
                f"report folder '{out}' is not empty and holds no earlier lenspipe report: "
                "choose a new or empty folder"
            )


def _snr_of(root: Any, name: str, path: Path, stretch: str) -> SnrNumbers | StoreError:
    """Read one complete dataset's data, noise map and mask, write its thumbnail to ``path`` and
    return its S/N numbers; the error if it cannot be read."""
    from pipeline.io.store import read_dataset_arrays
    from pipeline.plots.thumbnails import snr_map, snr_numbers, thumbnail_rgba, write_thumbnail

    try:
        arrays = read_dataset_arrays(root, name)
    except StoreError as err:  # damaged since it was marked complete
        return err
    mask = np.asarray(arrays["mask"], dtype=bool)
    snr = snr_map(arrays["data"], arrays["noise_map"], mask)
    write_thumbnail(path, thumbnail_rgba(snr, mask, stretch=stretch))
    return snr_numbers(snr, mask)


def _entry(
    name: str,
    record: DatasetRecord | StoreError,
    found: SnrNumbers | StoreError | None,
    thumbnail: str | None,
) -> ReportEntry:
    from pipeline.plots import ReportEntry

    if isinstance(record, Exception):
        return ReportEntry(name=name, status="damaged", reason=str(record))
    common: dict[str, Any] = {
        "name": name,
        "lens": record.lens,
        "band": record.band,
        "bunit": record.bunit,
        "shape": record.shape_native,
        "n_pixels": record.n_pixels,
        "bad_pixels": bad_pixel_total(record.bad_pixels),
    }
    if isinstance(found, Exception):
        return ReportEntry(status="damaged", reason=str(found), **common)
    state = status_of(record)
    reason = failure_reason(record) or _NOT_COMPLETE.get(state)
    if found is None:
        return ReportEntry(status=state, reason=reason, **common)
    return ReportEntry(
        status=state,
        peak_snr=found.peak,
        median_snr=found.median,
        thumbnail=thumbnail,
        **{**common, "n_pixels": found.n_unmasked},
    )


def _place_unplaced(entries: list[ReportEntry]) -> list[ReportEntry]:
    """Give a dataset without a recorded lens and band (one that failed before they were
    recorded) those of the multi-extension naming ``<lens>_<band>``, where other datasets
    record that lens and that band: its cell then sits in its lens's row."""
    lenses = {e.lens for e in entries if e.lens}
    bands = {e.band for e in entries if e.band}
    placed = []
    for entry in entries:
        if entry.lens is None and entry.band is None:
            for band in bands:
                lens = entry.name.removesuffix(f"_{band}")
                if lens != entry.name and lens in lenses:
                    entry = replace(entry, lens=lens, band=band)
                    break
        placed.append(entry)
    return placed


def write_report(
    store: str, out: Path, *, stretch: str = "asinh", workers: int | None = None
) -> Path:
    """Write the report of ``store`` into folder ``out``; returns the page's path.

    ``out`` is created if needed; an earlier report there is replaced (its thumbnails removed).
    ``workers``: threads reading datasets and drawing thumbnails (default: up to 8)."""
    from pipeline.io.store import dataset_records, last_run, open_store
    from pipeline.plots import report_html
    from pipeline.plots.core import parse_stretch

    parse_stretch(stretch)
    check_report_folder(out, store)
    root = open_store(store)
    records = dataset_records(root)
    thumbs = out / THUMBS
    thumbs.mkdir(parents=True, exist_ok=True)
    for old in thumbs.glob("*.png"):
        old.unlink()
    complete = [n for n, r in records.items() if status_of(r) == "complete"]
    # numbered files: dataset names differing only in case stay apart on macOS and Windows
    files = {name: f"{i:05d}-{name}.png" for i, name in enumerate(complete)}
    threads = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        found = dict(
            zip(
                complete,
                pool.map(lambda n: _snr_of(root, n, thumbs / files[n], stretch), complete),
                strict=True,
            )
        )
    entries = _place_unplaced(
        [
            _entry(
                name, record, found.get(name), f"{THUMBS}/{files[name]}" if name in files else None
            )
            for name, record in records.items()
        ]
    )
    page = report_html(
        entries,
        store=store,
        last_run=last_run(root),
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        stretch=stretch,
        software=f"lenspipe {version('lenspipe')}",
    )
    index = out / INDEX
    partial = index.with_suffix(".html.part")
    partial.write_text(page, encoding="utf-8")
    partial.replace(index)  # a browser never sees half a page
    return index


@click.command()
@click.argument("store")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write: index.html and thumbs/*.png (created; an earlier report there is "
    "replaced).",
)
@click.option(
    "--stretch",
    type=click.Choice(["asinh", "percentile", "linear"]),
    default="asinh",
    show_default=True,
    help="Colour scale of the S/N thumbnails. asinh: faint arcs and a bright lens together; "
    "percentile: linear up to the 99.5 percentile; linear: up to the peak.",
)
def report(store: str, out: Path, stretch: str) -> None:
    """Write a static HTML report of STORE into a folder: the summary and last run, the datasets
    that are not complete and why, and a contact sheet of S/N thumbnails (bands of one lens side
    by side) sortable by peak S/N or unmasked pixels (index.html#sort=snr, #sort=pixels).

    Open DIR/index.html in a browser: no server, nothing fetched from the network."""
    index = write_report(store, out, stretch=stretch)
    click.echo(f"wrote {index} (open it in a browser)")
