"""The documentation in ``docs/`` cannot drift from the code: the configuration reference is
regenerated from the pydantic models and compared with the committed file, the code on the
conventions page runs, and the commands, options, links and names the pages mention exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import pipeline
from pipeline.cli import cli
from pipeline.docs_reference import configuration_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ["quickstart.md", "conventions.md", "configuration.md", "clusters.md"]
PAGES += ["porting-from-pyautolens.md", "masks.md", "report.md"]


def _text(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def _code(text: str) -> list[str]:
    """Fenced blocks and inline code spans."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    return fenced + re.findall(r"`([^`\n]+)`", prose)


def test_configuration_reference_is_current():
    committed = _text("configuration.md")
    generated = configuration_reference()
    assert committed == generated, (
        "docs/configuration.md differs from the pydantic models in pipeline/flow/config/; "
        "regenerate it: python -m pipeline.docs_reference > docs/configuration.md"
    )


def test_every_configuration_key_is_described():
    rows = [line for line in configuration_reference().splitlines() if line.startswith("| `")]
    assert len(rows) > 40
    undescribed = [row.split("|")[1].strip() for row in rows if not row.split("|")[4].strip()]
    assert not undescribed, (
        f"config keys without a description: {undescribed}; give their Field a description= "
        "in pipeline/flow/config.py (or a note in pipeline/docs_reference.py)"
    )


def test_configuration_reference_covers_every_section():
    from pipeline.flow.config import Config

    reference = configuration_reference()
    for key in Config.model_fields:
        if key != "base_dir":
            assert f"| `{key}` |" in reference
    for kind in (
        "folders",
        "manifest",
        "mef",
        "circular",
        "annular",
        "elliptical",
        "file",
        "flags",
        "combine",
    ):
        assert f"`kind: {kind}`" in reference
    for kind in ("uniform", "radial", "adaptive", "local", "address", "slurm", "pbs"):
        assert f"`kind: {kind}`" in reference


def test_conventions_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", _text("conventions.md"), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/conventions.md block {number}", "exec"), namespace)


def _slug(heading: str) -> str:
    heading = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r'<a id="([^"]+)"></a>', text))
    return ids | {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page):
    text = _text(page)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page == "conventions.md"
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        target, _, anchor = link.partition("#")
        path = (DOCS / target).resolve() if target else DOCS / page
        assert path.exists(), f"{page}: broken link {link}"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{page}: no anchor #{anchor} in {path.name}"


@pytest.mark.parametrize("page", PAGES)
def test_commands_and_options_exist(page):
    for code in _code(_text(page)):
        for line in code.splitlines():
            for command, rest in re.findall(r"(?:^|[\s(])lenspipe ([a-z]+)\b([^#\n]*)", line):
                assert command in cli.commands, f"{page}: no command 'lenspipe {command}'"
                options = {o for p in cli.commands[command].params for o in p.opts}
                for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", rest):
                    assert option in options, f"{page}: 'lenspipe {command}' has no {option}"


@pytest.mark.parametrize("page", PAGES)
def test_api_names_exist(page):
    text = _text(page)
    for name in set(re.findall(r"(?<![\w.])lp\.([A-Za-z_]\w*)", text)):
        assert hasattr(pipeline, name), f"{page}: pipeline has no {name}"
    for name in set(re.findall(r"pipeline\.plots\.(\w+)|plots\.(\w+)\(", text)):
        attribute = next(n for n in name if n)
        from pipeline import plots

        assert hasattr(plots, attribute), f"{page}: pipeline.plots has no {attribute}"


def test_clusters_page_lists_the_worker_settings():
    from pipeline.flow.worker import WORKER_DASK_CONFIG, WORKER_ENVIRONMENT

    text = _text("clusters.md")
    for key, value in WORKER_ENVIRONMENT.items():
        assert f"export {key}='{value}'" in text, key  # in the job script example
        assert key in text.split("## Local")[0], key  # and in the table
    for key, value in WORKER_DASK_CONFIG.items():
        assert f"`{key}: {value}`" in text, key


def test_the_architecture_page_names_only_modules_that_exist():
    """docs/architecture.md's tables and picture name modules by path: each must exist, and every
    package of pipeline/ must appear in its layer table."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "architecture.md").read_text()
    paths = set(re.findall(r"((?:[a-z_]+/)+[a-z_]+\.py)\b", text))
    assert len(paths) > 20
    # package-relative (io/store/schema.py) or repository-relative (tests/test_layers.py)
    missing = [
        p for p in sorted(paths) if not any((b / p).exists() for b in (root / "pipeline", root))
    ]
    assert missing == []
    packages = sorted(p.name for p in (root / "pipeline").iterdir() if (p / "__init__.py").exists())
    assert [p for p in packages if f"`pipeline.{p}`" not in text] == []
