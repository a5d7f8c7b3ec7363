"""Reading a report page back (as written, or as a browser's DOM after its script ran): the
contact sheet's rows in order, the thumbnails, the problems table, the sort state."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Page:
    rows: list[dict[str, str]] = field(default_factory=list)  # section.row attributes, in order
    thumbs: list[dict[str, str]] = field(default_factory=list)  # img.thumb attributes
    cells: list[dict[str, str]] = field(default_factory=list)  # figure.cell attributes, and
    # "row": the data-name of the row holding it
    problems: dict[str, str] = field(default_factory=dict)  # dataset -> text of its reason
    sheet: dict[str, str] = field(default_factory=dict)  # #sheet attributes
    counts: dict[str, int] = field(default_factory=dict)  # status -> count badge
    scripts: int = 0
    external: list[str] = field(default_factory=list)  # src/href values that leave the page


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._problem: str | None = None
        self._in_reason = False
        self._count: str | None = None
        self._row = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        for key in ("src", "href"):
            if key in a and ("//" in a[key] or ":" in a[key].split("/")[0]):
                self.page.external.append(a[key])
        if tag == "script":
            self.page.scripts += 1
        if tag == "div" and a.get("id") == "sheet":
            self.page.sheet = a
        elif tag == "section" and "row" in classes:
            self.page.rows.append(a)
            self._row = a["data-name"]
        elif tag == "img" and "thumb" in classes:
            self.page.thumbs.append(a)
        elif tag == "figure" and "cell" in classes:
            self.page.cells.append({**a, "row": self._row})
        elif tag == "tr" and "problem" in classes:
            self._problem = a["data-dataset"]
            self.page.problems[self._problem] = ""
        elif tag == "td" and "reason" in classes and self._problem:
            self._in_reason = True
        elif tag == "b" and "count" in classes:
            self._count = a["data-status"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._in_reason = False
        elif tag == "tr":
            self._problem = None
        elif tag == "b":
            self._count = None

    def handle_data(self, data: str) -> None:
        if self._in_reason and self._problem:
            self.page.problems[self._problem] += data
        if self._count:
            self.page.counts[self._count] = int(data)


def read_page(text: str) -> Page:
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser.page
