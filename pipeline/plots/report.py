"""The survey report page (``lenspipe report``), built from plain values: no store, file or figure
is touched here (:mod:`pipeline.cli.report` reads the store and writes the files,
:mod:`pipeline.plots.thumbnails` draws the thumbnails).

One static HTML document (CSS and JavaScript inline, nothing fetched: a Content-Security-Policy
forbids it) with the store's summary and last run, the datasets that are not complete and why,
and a contact sheet: one row per lens with its bands side by side (a dataset without a recorded
lens and band is a row of its own), each dataset as its S/N thumbnail with its numbers. The sheet
sorts by name, peak S/N or unmasked pixels (largest first), from buttons or from the page
address: ``index.html#sort=snr``, ``#sort=pixels``, ``#sort=name``.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SORT_KEYS", "ReportEntry", "ReportRow", "group_rows", "report_html"]

SORT_KEYS = ("name", "snr", "pixels")
GENERATOR = "lenspipe report"  # the page's generator meta tag: how a report folder is recognised
_LAST_RUN_ROWS = (
    ("run_id", "run"),
    ("started", "started"),
    ("datasets_total", "datasets"),
    ("complete", "complete"),
    ("skipped_complete", "skipped (complete before)"),
    ("resumed", "resumed"),
    ("failed", "failed"),
    ("wall_seconds", "wall time (s)"),
    ("stopped", "stopped"),
)


@dataclass(frozen=True, kw_only=True)
class ReportEntry:
    """One dataset on the page.

    Attributes
    ----------
    name, status
        The dataset's name and status (``complete``, ``prepared``, ``failed``, ``damaged``,
        ``preparing``).
    lens, band
        The lens and band of a multi-extension FITS dataset (``DatasetRecord.lens``, ``.band``);
        ``None`` for other inputs.
    bunit
        The unit of its data (the data HDU's ``BUNIT``), if recorded.
    reason
        Why it is not complete (a failure's error type and message), if it is not.
    shape, n_pixels, bad_pixels
        Frame ``(ny, nx)``, unmasked pixels, and pixels masked as bad (``None``: not recorded).
    peak_snr, median_snr
        Of ``data / noise_map`` over the unmasked pixels.
    thumbnail
        The thumbnail's address relative to the page (``thumbs/…png``), if one was drawn.
    """

    name: str
    status: str
    lens: str | None = None
    band: str | None = None
    bunit: str | None = None
    reason: str | None = None
    shape: tuple[int, ...] | None = None
    n_pixels: int | None = None
    bad_pixels: int | None = None
    peak_snr: float | None = None
    median_snr: float | None = None
    thumbnail: str | None = None


@dataclass(frozen=True)
class ReportRow:
    """A row of the contact sheet: a lens (or a dataset of its own) and its cells, one per band
    column (``None`` where the lens has no dataset of that band)."""

    label: str
    cells: tuple[ReportEntry | None, ...]

    @property
    def entries(self) -> list[ReportEntry]:
        return [cell for cell in self.cells if cell is not None]

    @property
    def snr(self) -> float | None:
        """The row's S/N sort key: the highest peak S/N of its datasets (``None``: none known)."""
        values = [e.peak_snr for e in self.entries if e.peak_snr is not None]
        return max(values) if values else None

    @property
    def pixels(self) -> int | None:
        """The row's pixels sort key: the unmasked pixels of its datasets, summed (the size of
        the operators it needs); ``None`` where none is known."""
        values = [e.n_pixels for e in self.entries if e.n_pixels is not None]
        return sum(values) if values else None


def group_rows(entries: Iterable[ReportEntry]) -> tuple[tuple[str, ...], list[ReportRow]]:
    """``(band columns, rows)`` of the contact sheet, rows sorted by label.

    Datasets of one lens share a row, each in its band's column; the columns are the bands in
    order of first appearance, then ``""`` for datasets without a band (the only column when
    no dataset has one). A dataset without a lens is a row of its own, labelled by its name.
    """
    entries = list(entries)
    bands = list(dict.fromkeys(e.band for e in entries if e.band))
    if not bands or any(not e.band for e in entries):
        bands.append("")
    column = {band: i for i, band in enumerate(bands)}
    rows: list[tuple[str, list[ReportEntry | None]]] = []
    open_rows: dict[str, int] = {}  # lens -> index of its row
    for entry in entries:
        label = entry.lens or entry.name
        where = column[entry.band or ""]
        index = open_rows.get(label) if entry.lens else None
        if index is None or rows[index][1][where] is not None:
            rows.append((label, [None] * len(bands)))
            index = len(rows) - 1
            if entry.lens:
                open_rows[label] = index
        rows[index][1][where] = entry
    rows.sort(key=lambda row: row[0])  # stable: two rows of one label keep their order
    return tuple(bands), [ReportRow(label, tuple(cells)) for label, cells in rows]


# --------------------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _key(value: float | None, kind: type[float] | type[int]) -> str:
    """A sort key as a data attribute: exact (``repr``), ``""`` for none."""
    return "" if value is None else repr(kind(value))


def _cell(entry: ReportEntry | None, banded: bool) -> str:
    if entry is None:
        return '<div class="cell empty"></div>'
    label = entry.band if banded and entry.band else entry.name
    details = [entry.name]
    if entry.shape:
        details.append("×".join(str(n) for n in entry.shape) + " pixels")
    if entry.bunit:
        details.append(f"BUNIT {entry.bunit}")
    hover = _e(", ".join(details))
    status = _e(entry.status)
    if entry.thumbnail:
        picture = (
            f'<img class="thumb" src="{_e(entry.thumbnail)}" alt="S/N map of {_e(entry.name)}" '
            f'data-dataset="{_e(entry.name)}">'
        )
    else:
        picture = f'<div class="nothumb">{status}</div>'
    lines = [f'<span class="cellname">{_e(label)}</span>']
    if entry.status == "complete":
        lines.append(
            f'<span>S/N peak <b class="peak">{_number(entry.peak_snr)}</b> · median '
            f'<span class="median">{_number(entry.median_snr)}</span></span>'
        )
        lines.append(
            f'<span><span class="pixels">{_count(entry.n_pixels)}</span> unmasked · bad: '
            f'<span class="bad">{_count(entry.bad_pixels)}</span></span>'
        )
    if entry.reason:
        short = entry.reason if len(entry.reason) <= 100 else entry.reason[:99] + "…"
        lines.append(f'<span class="reason">{_e(short)}</span>')
    return (
        f'<figure class="cell {status}" data-dataset="{_e(entry.name)}" title="{hover}">'
        f"{picture}<figcaption>{''.join(lines)}</figcaption></figure>"
    )


def _sheet(entries: list[ReportEntry]) -> str:
    bands, rows = group_rows(entries)
    banded = bands != ("",)
    layout = "banded" if banded else "flat"
    parts = [f'<div id="sheet" class="{layout}" data-sorted="">']
    if banded:
        heads = "".join(f'<div class="bandhead">{_e(b) if b else "other"}</div>' for b in bands)
        parts.append(f'<div class="bands"><div class="rowhead"></div>{heads}</div>')
    for order, row in enumerate(rows):
        cells = "".join(_cell(cell, banded) for cell in row.cells)
        parts.append(
            f'<section class="row" data-name="{_e(row.label)}" data-order="{order}" '
            f'data-snr="{_key(row.snr, float)}" data-pixels="{_key(row.pixels, int)}">'
            f'<h3 class="rowhead">{_e(row.label)}</h3>{cells}</section>'
        )
    parts.append("</div>")
    return "\n".join(parts)


def _summary(entries: list[ReportEntry], last_run: Mapping[str, Any] | None) -> str:
    counts = Counter(e.status for e in entries)
    order = ["complete", "prepared", "failed", "damaged", "preparing"]
    order += sorted(s for s in counts if s not in order)
    badges = "".join(
        f'<span class="badge {_e(s)}"><b class="count" data-status="{_e(s)}">{counts[s]}</b> '
        f"{_e(s)}</span>"
        for s in order
        if counts[s] or s in ("complete", "failed")
    )
    bad = [e.bad_pixels for e in entries if e.bad_pixels]
    text = f'<p class="counts"><b>{len(entries)}</b> datasets {badges}</p>'
    if bad:
        text += f"<p>{sum(bad):,} bad pixels masked in {len(bad)} dataset(s).</p>"
    if last_run:
        items = []
        for key, label in _LAST_RUN_ROWS:
            value = last_run.get(key)
            if value is None:
                continue
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            items.append(f"<div><dt>{_e(label)}</dt><dd>{_e(shown)}</dd></div>")
        text += f'<p>Last run:</p><dl class="lastrun">{"".join(items)}</dl>'
    else:
        text += "<p>No run is recorded in this store.</p>"
    return text


def _problems(entries: list[ReportEntry]) -> str:
    problems = [e for e in entries if e.status != "complete"]
    if not problems:
        return '<p class="none">Every dataset is complete.</p>'
    rows = "".join(
        f'<tr class="problem" data-dataset="{_e(e.name)}"><td>{_e(e.name)}</td>'
        f'<td class="status {_e(e.status)}">{_e(e.status)}</td>'
        f'<td class="reason">{_e(e.reason or "")}</td></tr>'
        for e in problems
    )
    return (
        '<table class="problems"><thead><tr><th>dataset</th><th>status</th><th>why</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
    )


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.2em 1.5em;color:#1d1d1f;background:#fafafa}
h1{font-size:1.4em;margin:0}h2{font-size:1.1em;margin:1.1em 0 .4em}
.meta{color:#666;margin:.1em 0 .6em}code{font-size:.95em}p{margin:.3em 0}
.badge{display:inline-block;margin-left:.5em;padding:0 .55em;border-radius:1em;background:#ddd}
.badge.complete{background:#cdebd3}.badge.failed,.badge.damaged{background:#f6cfcb}
.badge.prepared,.badge.preparing{background:#fbe3bd}
.lastrun{display:flex;flex-wrap:wrap;gap:.2em 1.6em;margin:.4em 0 0;color:#333}
.lastrun div{display:flex;gap:.4em}.lastrun dt{color:#666}.lastrun dd{margin:0;font-weight:600}
table{border-collapse:collapse}td,th{padding:.15em .8em .15em 0;text-align:left;vertical-align:top}
.problems td.reason{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85em;
max-width:80em;word-break:break-word;color:#5c1a15}
td.status.failed,td.status.damaged{color:#b3261e;font-weight:600}
.legend{color:#444;font-size:.92em}
.controls{margin:.4em 0 .8em}.controls button{font:inherit;margin-left:.3em;padding:.1em .8em;
border:1px solid #999;border-radius:4px;background:#fff;cursor:pointer}
.controls button[aria-pressed=true]{background:#1d1d1f;color:#fff;border-color:#1d1d1f}
#sheet.flat{display:flex;flex-wrap:wrap;gap:12px}#sheet.flat .rowhead{display:none}
#sheet.banded .row,#sheet.banded .bands{display:flex;align-items:flex-start;gap:12px;
margin-bottom:10px}
.rowhead{width:9em;flex:none;font-size:.95em;margin:0;word-break:break-all}
.bandhead{width:180px;flex:none;font-weight:600;text-align:center}
.cell{width:180px;flex:none;margin:0;font-size:11.5px;line-height:1.35}
.cell.empty{visibility:hidden}
.thumb,.nothumb{display:block;width:180px;height:180px;object-fit:contain;background:#262626;
image-rendering:pixelated;border-radius:3px}
.nothumb{display:flex;align-items:center;justify-content:center;color:#f6cfcb;font-size:14px;
background:repeating-linear-gradient(45deg,#3a2a2a 0 8px,#302222 8px 16px)}
figcaption{margin-top:2px}figcaption>span{display:block}
.cellname{font-weight:600;word-break:break-all}
.reason{color:#b3261e;word-break:break-word}
"""

_JS = """
(function () {
  "use strict";
  var sheet = document.getElementById("sheet");
  var keys = {name: true, snr: true, pixels: true};
  var buttons = document.querySelectorAll("button[data-sort]");
  function value(row, key) {
    var text = row.getAttribute("data-" + key);
    return text ? parseFloat(text) : null;
  }
  function byName(a, b) {
    var x = a.getAttribute("data-name"), y = b.getAttribute("data-name");
    return x < y ? -1 : x > y ? 1 : 0;
  }
  function compare(key) {
    return function (a, b) {
      if (key === "name") {
        return value(a, "order") - value(b, "order");
      }
      var x = value(a, key), y = value(b, key);
      if (x === null || y === null) {
        return (x === null) - (y === null) || byName(a, b);
      }
      return y - x || byName(a, b);
    };
  }
  function sortBy(key) {
    var rows = Array.prototype.slice.call(sheet.querySelectorAll("section.row"));
    rows.sort(compare(key));
    rows.forEach(function (row) { sheet.appendChild(row); });
    sheet.setAttribute("data-sorted", key);
    Array.prototype.forEach.call(buttons, function (button) {
      button.setAttribute("aria-pressed", String(button.getAttribute("data-sort") === key));
    });
  }
  function fromAddress() {
    var found = /(?:^#|&)sort=([a-z]+)/.exec(window.location.hash);
    sortBy(found && keys.hasOwnProperty(found[1]) ? found[1] : "name");
  }
  Array.prototype.forEach.call(buttons, function (button) {
    button.addEventListener("click", function () {
      window.location.hash = "sort=" + button.getAttribute("data-sort");
    });
  });
  window.addEventListener("hashchange", fromAddress);
  fromAddress();
})();
"""

# nothing is fetched from anywhere but the page's own folder (thumbnails)
_POLICY = (
    "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'"
)


def report_html(
    entries: Iterable[ReportEntry],
    *,
    store: str,
    last_run: Mapping[str, Any] | None = None,
    generated: str = "",
    stretch: str = "asinh",
    software: str = "",
) -> str:
    """The report page of a store, as one HTML document (every name, message and value
    escaped).

    Parameters
    ----------
    entries
        The store's datasets, in the order of the contact sheet's rows (by name).
    store
        The store's location, as shown in the title.
    last_run
        The store's last run summary (``pipeline.io.store.last_run``), if any.
    generated, software
        When and by what the page was made (shown under the title).
    stretch
        The thumbnails' colour scale (shown in the sheet's legend).
    """
    entries = list(entries)
    buttons = "".join(
        f'<button type="button" data-sort="{key}" aria-pressed="false">{label}</button>'
        for key, label in zip(SORT_KEYS, ("name", "peak S/N", "unmasked pixels"), strict=True)
    )
    meta = ", ".join(p for p in (generated and f"made {generated}", software) if p)
    problems = sum(e.status != "complete" for e in entries)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{GENERATOR}">
<meta http-equiv="Content-Security-Policy" content="{_POLICY}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lenspipe report: {_e(store)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>Survey store <code>{_e(store)}</code></h1>
<p class="meta">{_e(meta)}</p>
<h2>Summary</h2>
<div id="summary">{_summary(entries, last_run)}</div>
<h2>Not complete ({problems})</h2>
<div id="problems">{_problems(entries)}</div>
<h2>Contact sheet</h2>
<p class="legend">Signal-to-noise (data / noise map) of the unmasked pixels, on the {_e(stretch)}
colour scale per dataset from S/N 0 (dark blue) to its brightest (yellow); masked pixels dark
grey, the mask outline red. Numbers: peak and median S/N, unmasked and bad pixels.</p>
<div class="controls">Sort by {buttons}</div>
{_sheet(entries)}
<script>{_JS}</script>
</body>
</html>
"""
