"""``lenspipe`` commands about input files: ``hdus``."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["hdus"]

_COLUMNS = ("index", "EXTNAME", "kind", "shape", "dtype", "BUNIT", "pixel scale (arcsec)")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON list of the HDUs instead.")
def hdus(file: Path, as_json: bool) -> None:
    """List the HDUs of a FITS FILE: index, EXTNAME, kind (image, compressed image, table,
    empty), shape (numpy order, (NAXIS2, NAXIS1)), dtype (from BITPIX, BZERO and BSCALE), BUNIT,
    and the pixel scale (sy, sx) as `pixel_scales: header` reads it ('-': none). Reads headers
    only; .fits.gz and tile-compressed (.fits.fz) files too. A missing or non-FITS file is an
    error (exit 2).

    The index or the EXTNAME is what a config's data_hdu, noise_map_hdu, psf_hdu (or a MEF
    band's data, noise_map, psf) names."""
    from pipeline.io.headers import read_file_headers, warnings_as_errors

    with warnings_as_errors():
        listing = read_file_headers(file)
    rows = [hdu.to_dict() for hdu in listing.hdus]  # pixel scales: outside the lock
    if as_json:
        click.echo(json.dumps({"file": str(file), "hdus": rows}, indent=2))
        return
    table = [_COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    click.echo(f"{file}: {len(rows)} HDU{'' if len(rows) == 1 else 's'}")
    for line in table:
        click.echo(
            "  " + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        )


def _cells(row: dict) -> tuple[str, ...]:
    shape = row["shape"]
    if row["kind"] == "table":
        size = f"{shape[0]} rows x {row['columns']} columns"
    else:
        size = "(" + ", ".join(map(str, shape)) + ")" if shape else "-"
    scales = row["pixel_scales"]
    if scales is None:
        scale = "-"
    elif scales[0] == scales[1]:
        scale = f"{scales[0]:.6g}"
    else:
        scale = f"{scales[0]:.6g}, {scales[1]:.6g}"
    return (
        str(row["index"]),
        row["name"],
        row["kind"],
        size,
        row["dtype"] or "-",
        row["bunit"] or "-",
        scale,
    )
