"""A store never destroys what is not its own: with the natural layout (a config beside a
``datasets/`` folder of lens folders), every store path that would overlap the inputs, or that is
an existing folder which is not a lenspipe store, is refused with exit 2 before anything is
written, and every input byte is unchanged (each file hashed before and after)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.mock import simulate_survey

pytestmark = pytest.mark.timeout(300)


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every regular file under ``folder`` (relative path -> hex digest; anything
    else, a FIFO say, is listed by kind and never opened)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root) / name
            key = os.fspath(path.relative_to(folder))
            mode = path.lstat().st_mode
            if not stat.S_ISREG(mode):
                out[key] = f"not a regular file: {stat.filemode(mode)}"
                continue
            out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """project/survey.yaml beside project/datasets/<lens>/{data,noise_map,psf}.fits and an
    unrelated file."""
    # its own folder: the parent hashed below holds nothing of other tests
    root = tmp_path_factory.mktemp("untouched") / "project"
    simulate_survey(root / "datasets", 2, seed=3, shape_range=(40, 40), psf_shapes=(5,))
    for extra in ("manifest.csv", "survey.yaml"):  # the simulator's own: not part of this layout
        (root / "datasets" / extra).unlink()
    (root / "notes.txt").write_text("observing notes: not lenspipe's\n")
    return root


def write_folders_config(project: Path, store: str) -> Path:
    config = {
        "inputs": {"kind": "folders", "root": "datasets"},
        "pixel_scales": 0.1,
        "mask": {"kind": "circular", "radius": 1.5},
        "over_sampling": {"kind": "uniform", "lp": 2, "pixelization": 2},
        "sparse_operator": {"backend": "numpy"},
        "output": {"store": store},
        "cluster": {"kind": "local", "n_workers": 1},
        "run": {"progress": False},
    }
    path = project / "survey.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("store", "words"),
    [
        ("", ["output.store"]),
        (".", ["output.store"]),
        ("datasets", ["datasets"]),  # the input root itself
        ("datasets/out.zarr", ["overlaps the input"]),  # inside the input root
        ("datasets/lens_00003", ["lens_00003"]),  # an input folder
        ("..", [""]),  # a folder that holds the inputs (and is not a store)
    ],
)
def test_a_store_overlapping_the_inputs_is_refused_and_no_byte_changes(
    project, store, words, capsys, monkeypatch
):
    monkeypatch.chdir(project)
    config = write_folders_config(project, store)
    before = tree_digest(project.parent)
    code = main(["run", str(config), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert main(["validate", str(config)]) == 2  # validate says so too, before any run
    capsys.readouterr()
    assert err.startswith("error:") and all(word in err for word in words), err
    assert "Traceback" not in err
    after = tree_digest(project.parent)
    assert after == before  # nothing deleted, changed or added


def test_the_same_layout_with_a_sibling_store_runs_and_leaves_inputs_untouched(
    project, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(project)
    config = write_folders_config(project, "survey.zarr")
    inputs = tree_digest(project / "datasets")
    code = main(["run", str(config), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (project / "survey.zarr" / "datasets" / "lens_00003" / "zarr.json").exists()
    # re-run (resume) too: inputs unchanged, unrelated file kept
    assert main(["run", str(config), "--no-progress"]) == 0
    assert tree_digest(project / "datasets") == inputs
    assert (project / "notes.txt").read_text() == "observing notes: not lenspipe's\n"


def test_a_manifest_whose_files_sit_inside_the_store_is_refused(tmp_path, capsys):
    """A store folder that holds input files (a manifest pointing into it) is refused even when
    the folder is a real lenspipe store."""
    config_path = simulate_survey(tmp_path, 1, seed=5, shape_range=(32, 32), psf_shapes=(3,))
    config = yaml.safe_load(config_path.read_text())
    config["output"]["store"] = "lens_00005"  # the lens's own folder as store
    config_path.write_text(yaml.safe_dump(config))
    before = tree_digest(tmp_path)
    assert main(["run", str(config_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "lens_00005" in err and "Traceback" not in err
    assert tree_digest(tmp_path) == before
