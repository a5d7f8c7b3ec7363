"""The report page builder (pure: entries in, HTML out): rows grouped by lens with bands side by
side, sort keys, escaping of every name and message, the summary and the problems table."""

from __future__ import annotations

from pipeline.plots import ReportEntry, group_rows, report_html
from tests.plots.page import read_page


def _complete(name: str, peak: float, pixels: int, **kw) -> ReportEntry:
    return ReportEntry(
        name=name,
        status="complete",
        peak_snr=peak,
        median_snr=peak / 10,
        n_pixels=pixels,
        thumbnail=f"thumbs/{name}.png",
        **kw,
    )


def test_rows_group_bands_of_a_lens():
    entries = [
        _complete("a_VIS", 40.0, 800, lens="a", band="VIS"),
        _complete("a_NIR", 12.5, 200, lens="a", band="NIR"),
        _complete("b_NIR", 60.0, 210, lens="b", band="NIR"),  # no VIS: an empty cell
        ReportEntry(name="c_VIS", status="failed", reason="boom", lens="c", band="VIS"),
        _complete("plain", 5.0, 50),  # no lens, no band: its own row, the "" column
    ]
    bands, rows = group_rows(entries)
    assert bands == ("VIS", "NIR", "")
    assert [r.label for r in rows] == ["a", "b", "c", "plain"]
    assert [[c.name if c else None for c in r.cells] for r in rows] == [
        ["a_VIS", "a_NIR", None],
        [None, "b_NIR", None],
        ["c_VIS", None, None],
        [None, None, "plain"],
    ]
    # sort keys: the best peak S/N of the row, its pixels summed; none known for c
    assert [(r.snr, r.pixels) for r in rows] == [
        (40.0, 1000),
        (60.0, 210),
        (None, None),
        (5.0, 50),
    ]


def test_rows_without_bands_are_one_column():
    entries = [_complete(f"lens_{i}", float(i), 100 + i) for i in range(3)]
    bands, rows = group_rows(entries)
    assert bands == ("",)
    assert [r.label for r in rows] == ["lens_0", "lens_1", "lens_2"]
    assert all(len(r.cells) == 1 for r in rows)


def test_a_second_dataset_of_one_lens_and_band_gets_its_own_row():
    entries = [
        _complete("x1", 1.0, 10, lens="x", band="VIS"),
        _complete("x2", 2.0, 20, lens="x", band="VIS"),
    ]
    _, rows = group_rows(entries)
    assert [[c.name for c in r.entries] for r in rows] == [["x1"], ["x2"]]


def test_page_sort_keys_thumbnails_and_problems():
    entries = [
        _complete("a_VIS", 40.0, 800, lens="a", band="VIS", bunit="electron/s"),
        _complete("a_NIR", 12.5, 200, lens="a", band="NIR", bad_pixels=3),
        _complete("b_VIS", 60.25, 210, lens="b", band="VIS"),
        ReportEntry(name="b_NIR", status="failed", reason="FitsReadError: no HDU 'NIR_RMS'"),
        ReportEntry(name="c_VIS", status="prepared", reason="prepared, not complete", n_pixels=5),
    ]
    last = {"run_id": "20261201T000000Z-abc", "complete": 3, "failed": 1, "wall_seconds": 2.25}
    text = report_html(entries, store="s.zarr", last_run=last, stretch="percentile")
    page = read_page(text)
    assert page.sheet["class"] == "banded" and page.scripts == 1 and page.external == []
    assert [r["data-name"] for r in page.rows] == ["a", "b", "b_NIR", "c_VIS"]
    assert [(r["data-snr"], r["data-pixels"]) for r in page.rows] == [
        ("40.0", "1000"),
        ("60.25", "210"),
        ("", ""),
        ("", "5"),
    ]
    assert [t["data-dataset"] for t in page.thumbs] == ["a_VIS", "a_NIR", "b_VIS"]
    assert [t["src"] for t in page.thumbs] == [
        f"thumbs/{n}.png" for n in ("a_VIS", "a_NIR", "b_VIS")
    ]
    assert page.problems == {
        "b_NIR": "FitsReadError: no HDU 'NIR_RMS'",
        "c_VIS": "prepared, not complete",
    }
    assert page.counts == {"complete": 3, "prepared": 1, "failed": 1}
    assert "20261201T000000Z-abc" in text and "2.2" in text  # wall seconds, one decimal
    assert "on the percentile\ncolour scale" in text
    assert 'S/N peak <b class="peak">60.2</b>' in text  # one decimal shown, exact in data-snr
    assert 'bad: <span class="bad">3</span>' in text and "BUNIT electron/s" in text
    assert "Content-Security-Policy" in text and "default-src 'none'" in text


def test_every_name_and_message_is_escaped():
    hostile = "<script>alert('x')</script> & \"quotes\""
    entries = [
        ReportEntry(name="bad_one", status="failed", reason=hostile, lens=hostile, band="<u>"),
        _complete("ok", 3.0, 10, bunit='"><img src=x onerror=alert(1)>'),
    ]
    text = report_html(entries, store="<store>", last_run={"run_id": hostile})
    assert "<script>alert" not in text and "<img src=x" not in text and "<u>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;quotes&quot;" in text
    page = read_page(text)
    assert page.scripts == 1  # only the page's own
    assert page.problems == {"bad_one": hostile}
    assert page.rows[0]["data-name"] == hostile
    assert "&lt;store&gt;" in text


def test_a_store_without_runs_or_problems():
    text = report_html([_complete("one", 9.0, 99)], store="s.zarr")
    page = read_page(text)
    assert page.sheet["class"] == "flat" and len(page.thumbs) == 1 and page.problems == {}
    assert "No run is recorded" in text and "Every dataset is complete" in text
    empty = read_page(report_html([], store="s.zarr"))
    assert empty.rows == [] and empty.counts == {"complete": 0, "failed": 0}
