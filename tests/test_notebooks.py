"""The notebooks in ``notebooks/`` execute without error on a tiny simulated survey (nbclient, the
``python3`` kernel of the interpreter running the tests), show what they promise, and are committed
with their outputs stripped."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from pipeline.flow.config import load_config
from pipeline.flow.run import run_survey
from pipeline.mock import simulate_survey

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL_CHECK = "import sys; print('kernel prefix', sys.prefix)"


def _tiny_survey(folder: Path) -> Path:
    config_path = simulate_survey(folder, 2, seed=20, shape_range=(40, 48), psf_shapes=(5, 7))
    config = yaml.safe_load(config_path.read_text())
    config["cluster"] = {"kind": "local", "n_workers": 1}
    config["run"]["progress"] = False
    config_path.write_text(yaml.safe_dump(config))
    return config_path


def _execute(notebook_name: str, folder: Path, /, **parameters) -> nbformat.NotebookNode:
    """Run a notebook in ``folder`` with ``parameters`` set in a cell after its ``parameters``
    cell, as papermill injects them."""
    notebook = nbformat.read(NOTEBOOKS / notebook_name, as_version=4)
    found = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(found) == 1, f"{notebook_name} needs exactly one cell tagged 'parameters'"
    if parameters:
        source = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
        injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
        notebook.cells.insert(found[0] + 1, injected)
    notebook.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
    ).execute()
    return notebook


def _outputs(notebook) -> tuple[str, str, int]:
    """(stdout text, stderr text, number of PNG images) of an executed notebook."""
    stdout, stderr, images = [], [], 0
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                (stdout if output.name == "stdout" else stderr).append(output.text)
            elif "image/png" in output.get("data", {}):
                images += 1
    return "".join(stdout), "".join(stderr), images


def _ran_in_this_interpreter(stdout: str) -> None:
    import sys

    assert f"kernel prefix {sys.prefix}" in stdout


@pytest.mark.parametrize("name", ["survey_run.ipynb", "inspect_store.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def test_survey_run_notebook(tmp_path):
    config_path = _tiny_survey(tmp_path / "survey")
    notebook = _execute("survey_run.ipynb", tmp_path, config_path=str(config_path), n_workers=1)
    stdout, _, images = _outputs(notebook)
    _ran_in_this_interpreter(stdout)
    assert "dashboard http" in stdout and "1 workers connected" in stdout
    assert re.search(r"^ +complete \(this run\) +2$", stdout, flags=re.M)
    assert len(re.findall(r"lens_000\d\d  complete$", stdout, flags=re.M)) == 2  # the statuses
    assert images == 3  # survey overview, dataset panel, operator panel
    html = [
        o.data["text/html"]
        for c in notebook.cells
        for o in c.get("outputs", [])
        if "text/html" in o.get("data", {})
    ]
    assert any("Dask dashboard" in h for h in html)
    store = load_config(config_path).store_location
    assert Path(store).is_dir()


@pytest.mark.slow
def test_survey_run_notebook_defaults_simulate_a_survey(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders go here
    notebook = _execute("survey_run.ipynb", tmp_path)
    stdout, _, images = _outputs(notebook)
    assert f"simulated 4 mock lenses into {tmp_path}" in stdout
    assert re.search(r"^ +complete \(this run\) +4$", stdout, flags=re.M)
    assert images == 3


@pytest.fixture(scope="module")
def survey_store(tmp_path_factory) -> str:
    config = load_config(_tiny_survey(tmp_path_factory.mktemp("inspect")))
    assert run_survey(config).complete == 2
    return config.store_location


def test_inspect_store_notebook(survey_store, tmp_path):
    notebook = _execute("inspect_store.ipynb", tmp_path, store=survey_store, name="lens_00021")
    stdout, _, images = _outputs(notebook)
    _ran_in_this_interpreter(stdout)
    assert "lens_00020  complete" in stdout and "lens_00021  complete" in stdout
    assert "Imaging(name='lens_00021'" in stdout and "ImagingSparseOperator(" in stdout
    assert "symmetric True" in stdout
    error_line = next(line for line in stdout.splitlines() if line.startswith("max |F - Aᵀ W A|"))
    assert float(error_line.split("=")[1]) < 1e-12
    assert images == 2  # dataset panel, operator panel


def test_inspect_store_notebook_defaults_write_a_store(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    notebook = _execute("inspect_store.ipynb", tmp_path)
    stdout, _, images = _outputs(notebook)
    assert f"{tmp_path}" in stdout and "2 datasets" in stdout and "mock_000  complete" in stdout
    assert images == 2
