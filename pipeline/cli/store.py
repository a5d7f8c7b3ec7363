"""``lenspipe`` commands that read or tidy a store: ``status``, ``inspect``, ``plot``, ``rm``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli.common import EXIT_ERROR, CommandExit

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipeline.io.store import DatasetRecord

__all__ = [
    "bad_pixel_total",
    "failure_reason",
    "inspect",
    "plot",
    "plot_figure",
    "rm",
    "status",
    "status_of",
]

MESSAGE_WIDTH = 200  # characters of an error message `lenspipe status` shows (--long: all)

_ALLOW_INCOMPLETE = click.option(
    "--allow-incomplete",
    is_flag=True,
    help="Also read a dataset that is not complete (prepared, failed): what is stored, as the "
    "Python API's allow_incomplete=True.",
)


# ---------------------------------------------------------------------------------------- status
def status_of(record: DatasetRecord | Exception) -> str:
    """A dataset's status as commands show it: ``damaged`` for one that cannot be read,
    ``preparing`` for one without a status yet."""
    if isinstance(record, Exception):
        return "damaged"
    return record.status.value if record.status is not None else "preparing"


def _one_line(text: str, width: int | None) -> str:
    """``text`` on one line (runs of whitespace, newlines included, as one space), cut to
    ``width`` characters with an ellipsis (``None``: whole)."""
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        return text[: width - 1] + "…"
    return text


def bad_pixel_total(counts: int | Mapping[str, int] | None) -> int | None:
    """The number of bad pixels of a recorded count or counts by kind (``None``: none
    recorded)."""
    if counts is None or isinstance(counts, int):
        return counts
    return sum(counts.values())


def _bad_pixels_text(counts: int | Mapping[str, int] | None) -> str:
    """``"12 bad pixels"``, ``"12 bad pixels (nan_data 10, zero_noise 2)"``; ``""`` if none are
    recorded."""
    total = bad_pixel_total(counts)
    if total is None:
        return ""
    text = f"{total} bad pixel{'s' if total != 1 else ''}"
    if isinstance(counts, Mapping) and counts:
        text += " (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")"
    return text


def failure_reason(record: DatasetRecord | Exception) -> str | None:
    """Why a dataset failed or cannot be read: ``"ErrorType: message"`` (the type where it was
    recorded), or ``None``."""
    if isinstance(record, Exception):
        return str(record)
    if record.status is None or record.status.value != "failed":
        return None
    message = record.error or "no error was recorded"
    return f"{record.error_type}: {message}" if record.error_type else message


def _status_line(name: str, record: DatasetRecord | Exception, width: int | None) -> str:
    parts = [status_of(record)]
    reason = failure_reason(record)
    if reason:
        parts.append(_one_line(reason, width))
    bad = "" if isinstance(record, Exception) else _bad_pixels_text(record.bad_pixels)
    line = f"  {name}: " + ": ".join(parts)
    return line + (f" [{bad}]" if bad else "")


def _status_json(record: DatasetRecord | Exception) -> dict[str, Any]:
    if isinstance(record, Exception):
        return {
            "status": "damaged",
            "error_type": type(record).__name__,
            "error": str(record),
            "bad_pixels": None,
        }
    bad = record.bad_pixels
    return {
        "status": status_of(record),
        "error_type": record.error_type,
        "error": record.error,
        "bad_pixels": dict(bad) if isinstance(bad, Mapping) else bad,
    }


@click.command()
@click.argument("store")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {name: status} as JSON; with --long, {name: {status, error_type, error, "
    "bad_pixels}}.",
)
@click.option(
    "-l",
    "--long",
    "long",
    is_flag=True,
    help="List every dataset (not only those not complete), with whole error messages.",
)
def status(store: str, as_json: bool, long: bool) -> None:
    """Status of every dataset in STORE; why each failed or damaged one is so.

    A failed dataset is shown with its error (type and message, cut to one line; --long or
    `lenspipe inspect STORE NAME` shows it whole) and, where recorded, its bad-pixel counts."""
    from pipeline.io.store import dataset_records

    records = dataset_records(store)
    if as_json:
        if long:
            found: dict[str, Any] = {n: _status_json(r) for n, r in records.items()}
        else:
            found = {n: status_of(r) for n, r in records.items()}
        click.echo(json.dumps(found, indent=1, sort_keys=True))
        return
    counts = Counter(status_of(r) for r in records.values())
    click.echo(
        f"{store}: {len(records)} datasets: "
        + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
    )
    unlisted = []  # bad-pixel totals of the complete datasets not listed
    for name, record in records.items():
        if long or status_of(record) != "complete":
            click.echo(_status_line(name, record, None if long else MESSAGE_WIDTH))
        elif not isinstance(record, Exception) and bad_pixel_total(record.bad_pixels):
            unlisted.append(bad_pixel_total(record.bad_pixels) or 0)
    if unlisted:
        click.echo(
            f"bad pixels: {sum(unlisted)} in {len(unlisted)} complete dataset(s) (--long lists "
            "them)"
        )
    if counts.get("failed"):
        click.echo(
            f"The next `lenspipe run` prepares failed datasets again; `lenspipe rm {store} "
            "--failed` removes them."
        )


# ---------------------------------------------------------------------------------------- inspect
def _arrays_summary(store: str, name: str, record: DatasetRecord, allow_incomplete: bool) -> str:
    """What a reader gets from dataset ``name``: its frame, pixels and operator, or why not."""
    from pipeline.exc import StoreError
    from pipeline.io.store import batches_done, open_imaging, open_store

    state = status_of(record)
    if state != "complete" and not allow_incomplete:
        return f"not read (status {state!r}; --allow-incomplete reads what is stored)"
    try:
        imaging = open_imaging(store, name, allow_incomplete=allow_incomplete)
        text = f"{imaging.shape_native} frame, {imaging.shape_slim} unmasked pixels"
        operator = imaging.sparse_operator
        if operator is not None:
            done = batches_done(open_store(store), name)
            text += (
                f"; operator W {operator.n_pixels} x {len(operator.offsets)} {operator.dtype}, "
                f"{int(done.sum())}/{done.size} batches done"
            )
    except StoreError as err:
        return f"cannot be read: {err}"
    return text


@click.command()
@click.argument("store")
@click.argument("name", required=False)
@_ALLOW_INCOMPLETE
def inspect(store: str, name: str | None, allow_incomplete: bool) -> None:
    """Summary of STORE, or of dataset NAME in it (its attributes, then what a reader gets)."""
    from pipeline.io.store import (
        dataset_record,
        last_run,
        list_datasets,
        open_store,
        store_metadata,
    )

    if name is None:
        root = open_store(store)
        meta = store_metadata(root)
        click.echo(
            f"{store}: lenspipe store, schema_version {meta.get('schema_version')}, "
            f"created {meta.get('created')}"
        )
        statuses = list_datasets(store)
        click.echo(f"  {len(statuses)} datasets")
        last = last_run(root)
        if last:
            click.echo(
                f"  last run {last['run_id']}: {last['complete']} complete, {last['failed']} failed, "
                f"{last['skipped_complete']} skipped, {last['wall_seconds']:.1f} s wall"
            )
        return
    record = dataset_record(store, name)
    for label, value in record.summary_items():
        click.echo(f"{label:>14}: {value}")
    if record.error_type:
        click.echo(f"{'error_type':>14}: {record.error_type}")
    if record.bad_pixels is not None:
        click.echo(f"{'bad_pixels':>14}: {_bad_pixels_text(record.bad_pixels)}")
    for source in record.sources:
        click.echo(
            f"{'source':>14}: {source.role}: {source.path} [{source.hdu}] "
            f"sha256 {(source.sha256 or '')[:16]}…"
        )
    click.echo(f"{'arrays':>14}: {_arrays_summary(store, name, record, allow_incomplete)}")


# ---------------------------------------------------------------------------------------- plot
def plot_figure(
    store: str,
    name: str | None,
    *,
    kind: str | None = None,
    pixel: tuple[int, int] | None = None,
    stretch: str = "asinh",
    allow_incomplete: bool = False,
) -> Figure:
    """The figure `lenspipe plot` draws: of dataset ``name`` (``kind`` dataset or operator, data
    and noise in the unit of its recorded BUNIT), or of the whole survey."""
    from pipeline import plots

    kind = kind or ("dataset" if name else "survey")
    if kind == "survey":
        return plots.survey_overview(store)
    if name is None:
        raise click.UsageError(f"--kind {kind} needs the dataset NAME (lenspipe status {store})")
    from pipeline.io.store import dataset_record, open_imaging

    imaging = open_imaging(store, name, allow_incomplete=allow_incomplete)
    bunit = dataset_record(store, name).bunit
    if kind == "dataset":
        return plots.dataset_panel(imaging, bunit=bunit, stretch=stretch)
    return plots.operator_panel(imaging, pixel=pixel or None, bunit=bunit)


@click.command()
@click.argument("store")
@click.argument("name", required=False)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Image file to write (PNG; .pdf and .svg work too).",
)
@click.option(
    "--kind",
    type=click.Choice(["dataset", "operator", "survey"]),
    default=None,
    help="dataset: data, noise, S/N, PSF, mask, over-sampling; operator: a row of W, the band, "
    "a curvature matrix; survey: statuses, sizes, times. Default: dataset if NAME is given, "
    "else survey.",
)
@click.option(
    "--pixel",
    nargs=2,
    type=int,
    default=None,
    metavar="ROW COL",
    help="operator: the pixel whose row of W is shown (default: the central unmasked pixel).",
)
@click.option(
    "--stretch",
    type=click.Choice(["asinh", "percentile", "linear"]),
    default="asinh",
    show_default=True,
    help="dataset: colour scale of the images. asinh: faint arcs and a bright lens together; "
    "percentile: linear between the 0.5 and 99.5 percentiles; linear: minimum to maximum.",
)
@click.option("--dpi", type=click.IntRange(30, 600), default=120, show_default=True)
@_ALLOW_INCOMPLETE
def plot(
    store: str,
    name: str | None,
    output: Path,
    kind: str | None,
    pixel: tuple[int, int] | None,
    stretch: str,
    dpi: int,
    allow_incomplete: bool,
) -> None:
    """Draw dataset NAME of STORE (or the whole survey) into an image file.

    Data and noise are labelled with the unit of the data HDU's BUNIT card, where the store
    recorded one ("data units" otherwise)."""
    figure = plot_figure(
        store,
        name,
        kind=kind,
        pixel=pixel,
        stretch=stretch,
        allow_incomplete=allow_incomplete,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=dpi)
    click.echo(f"wrote {output}")


# ---------------------------------------------------------------------------------------- rm
def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # a closed stdin
        return False


@click.command()
@click.argument("store")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--failed", is_flag=True, help="Remove every dataset whose status is failed.")
@click.option("-n", "--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option(
    "-y",
    "--yes",
    is_flag=True,
    help="Remove without asking (needed where stdin is not a terminal: scripts, batch jobs).",
)
def rm(store: str, names: tuple[str, ...], failed: bool, dry_run: bool, yes: bool) -> None:
    """Remove datasets from STORE: each NAME, and with --failed every failed one.

    Lists what it removes, then asks (on a terminal; elsewhere --yes is required). Every name is
    checked first: an unknown one removes nothing. Each dataset goes with all its arrays; other
    datasets, run records and the store's metadata are untouched. Holds the store's lock while
    it removes: refused (exit 2) while a run holds it. A later `lenspipe run` prepares a removed
    dataset again if its config still lists it."""
    from pipeline.io.store import remove_datasets, select_datasets

    if not names and not failed:
        raise click.UsageError("name the datasets to remove (NAME...), or pass --failed")
    chosen = select_datasets(store, names, failed=failed)
    if not chosen:
        click.echo(f"{store}: no failed datasets; nothing to remove")
        return
    verb = "would remove" if dry_run else "removing"
    click.echo(f"{store}: {verb} {len(chosen)} dataset(s):")
    for name, state in chosen.items():
        click.echo(f"  {name} ({state})")
    if dry_run:
        return
    if not yes:
        if not _stdin_is_terminal():
            raise click.UsageError(
                "not removing without confirmation: stdin is not a terminal; add --yes (or "
                "--dry-run to only list them)"
            )
        if not click.confirm(f"Remove these {len(chosen)} dataset(s)?", default=False):
            click.echo("Nothing removed.", err=True)
            raise CommandExit(EXIT_ERROR)
    removed = remove_datasets(store, names, failed=failed, expected=chosen)
    click.echo(f"removed {len(removed)} dataset(s) from {store}")
