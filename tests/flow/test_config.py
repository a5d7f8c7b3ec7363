"""The survey configuration (DESIGN §6): validation, defaults, error messages naming the key,
YAML loading with relative paths, and the settings that define a dataset."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from pipeline.exc import ConfigError
from pipeline.flow.config import (
    CircularMask,
    Config,
    FoldersInput,
    LocalClusterConfig,
    ManifestInput,
    MefInput,
    config_from_dict,
    load_config,
)

MINIMAL = {
    "inputs": {"kind": "folders", "root": "lenses"},
    "pixel_scales": 0.1,
    "mask": {"kind": "circular", "radius": 3.0},
    "output": {"store": "survey.zarr"},
}

FULL = {
    "inputs": {
        "kind": "folders",
        "root": "lenses",
        "pattern": "lens_*",
        "data": "image.fits",
        "noise_map": "rms.fits",
        "psf": "psf.fits",
        "mask": "mask.fits",
        "data_hdu": 1,
        "noise_map_hdu": "RMS",
    },
    "pixel_scales": [0.1, 0.1],
    "mask": {"kind": "annular", "inner_radius": 0.5, "outer_radius": 3.0, "centre": [0.1, -0.1]},
    "over_sampling": {"kind": "radial", "sub_size_list": [8, 4, 1], "radial_list": [0.3, 1.0]},
    "sparse_operator": {"backend": "numba", "batch_size": 512, "dtype": "float32"},
    "output": {"store": "out/survey.zarr", "storage_options": {"anon": False}},
    "cluster": {"kind": "local", "n_workers": 2, "memory_limit": "2GiB"},
    "run": {"retries": 1, "max_tasks_in_flight": 8, "progress": False},
}


def with_(base: dict, path: str, value) -> dict:
    """A deep copy of ``base`` with ``value`` set at the dotted ``path``."""
    data = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return data


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


# ---------------------------------------------------------------------------------------- valid
def test_full_config_validates():
    config = config_from_dict(FULL)
    assert isinstance(config.inputs, FoldersInput)
    assert config.inputs.pattern == "lens_*"
    assert config.inputs.data_hdu == 1 and config.inputs.noise_map_hdu == "RMS"
    assert config.pixel_scales == (0.1, 0.1)
    assert config.mask.kind == "annular" and config.mask.centre == (0.1, -0.1)
    assert config.over_sampling.sub_size_list == [8, 4, 1]
    assert config.sparse_operator.backend == "numba"
    assert config.sparse_operator.batch_size == 512
    assert config.cluster.n_workers == 2
    assert config.run.retries == 1


def test_defaults_are_filled():
    config = config_from_dict(MINIMAL)
    assert config.over_sampling.kind == "uniform"
    assert (config.over_sampling.lp, config.over_sampling.pixelization) == (4, 4)
    assert config.sparse_operator.backend == "numpy"
    assert config.sparse_operator.dtype == "float64"
    assert config.sparse_operator.enabled is True
    assert isinstance(config.cluster, LocalClusterConfig)
    assert config.cluster.n_workers is None
    assert config.run.retries == 2
    assert config.output.storage_options == {}
    assert isinstance(config.inputs, FoldersInput)
    assert config.inputs.data == "data.fits" and config.inputs.mask is None
    assert isinstance(config.mask, CircularMask) and config.mask.centre == (0.0, 0.0)


def test_input_kinds():
    manifest = config_from_dict(with_(MINIMAL, "inputs", {"kind": "manifest", "path": "m.csv"}))
    assert isinstance(manifest.inputs, ManifestInput)
    mef = config_from_dict(
        with_(
            MINIMAL,
            "inputs",
            {
                "kind": "mef",
                "root": "cutouts",
                "bands": {"VIS": {"data": "VIS_BGSUB", "noise_map": "VIS_RMS", "psf": "VIS_PSF"}},
            },
        )
    )
    assert isinstance(mef.inputs, MefInput)
    assert mef.inputs.bands["VIS"].noise_map == "VIS_RMS"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.1, 0.1), (2, 2), ([0.1, 0.2], (0.1, 0.2)), ("header", "header"), ("0.05", 0.05)],
)
def test_pixel_scales_forms(value, expected):
    assert config_from_dict(with_(MINIMAL, "pixel_scales", value)).pixel_scales == expected


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("path", "key_path"),
    [
        ("colour", "colour"),
        ("mask.radus", "mask.radus"),
        ("sparse_operator.backnd", "sparse_operator.backnd"),
        ("inputs.paternn", "inputs.paternn"),
        ("cluster.n_worker", "cluster.n_worker"),
        ("run.retry", "run.retry"),
        ("output.storage", "output.storage"),
    ],
)
def test_unknown_keys_are_named_by_their_path(path, key_path):
    data = with_(MINIMAL, "cluster", {"kind": "local"})
    message = error_of(with_(data, path, 1))
    assert f"{key_path}: unknown key" in message
    # the union tag (e.g. "circular") is not part of the path the user sees
    assert ".circular." not in message and ".folders." not in message


def test_unknown_key_nested_in_a_mef_band():
    data = with_(
        MINIMAL,
        "inputs",
        {
            "kind": "mef",
            "root": "c",
            "bands": {"VIS": {"data": "A", "noise_map": "B", "psf": "C", "msk": "D"}},
        },
    )
    assert "inputs.bands.VIS.msk: unknown key" in error_of(data)


def test_typo_in_a_required_key_names_both():
    data = with_(MINIMAL, "mask", {"kind": "circular", "radus": 3.0})
    message = error_of(data)
    assert "mask.radus: unknown key" in message
    assert "mask.radius: required key is missing" in message


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("mask.radius", "big", "mask.radius", "valid number"),
        ("mask.radius", -1.0, "mask.radius", "greater than 0"),
        ("mask.radius", float("nan"), "mask.radius", "finite"),
        ("sparse_operator.batch_size", 0, "sparse_operator.batch_size", "greater than or equal"),
        ("sparse_operator.backend", "cuda", "sparse_operator.backend", "'numpy'"),
        ("pixel_scales", -0.1, "pixel_scales", "positive"),
        ("pixel_scales", [0.1, 0.0], "pixel_scales", "positive"),
        ("pixel_scales", float("inf"), "pixel_scales", "finite"),
        ("pixel_scales", "heder", "pixel_scales", "'header'"),
        ("pixel_scales", [0.1, 0.1, 0.1], "pixel_scales", "pair"),
        ("cluster", {"kind": "kubernetes"}, "cluster.kind", "'slurm'"),
        ("mask", {"radius": 3.0}, "mask.kind", "'circular'"),
        ("run.retries", -1, "run.retries", "greater than or equal"),
    ],
)
def test_wrong_values_name_the_key(path, value, key, words):
    message = error_of(with_(MINIMAL, path, value))
    line = next((x for x in message.splitlines() if x.strip().startswith(f"{key}:")), None)
    assert line is not None, message
    assert words in line


def test_annular_inner_not_below_outer():
    data = with_(MINIMAL, "mask", {"kind": "annular", "inner_radius": 3.0, "outer_radius": 3.0})
    message = error_of(data)
    assert "mask:" in message and "inner_radius" in message and "outer_radius" in message


def test_radial_list_length_mismatch():
    data = with_(
        MINIMAL,
        "over_sampling",
        {"kind": "radial", "sub_size_list": [8, 4, 1], "radial_list": [0.3]},
    )
    message = error_of(data)
    assert "over_sampling:" in message and "radial_list" in message


def test_list_items_are_named_by_index():
    data = with_(
        MINIMAL, "over_sampling", {"kind": "radial", "sub_size_list": [0, 2], "radial_list": [1]}
    )
    assert "over_sampling.sub_size_list[0]:" in error_of(data)


def test_missing_section_is_named():
    data = copy.deepcopy(MINIMAL)
    del data["output"]
    assert "output: required key is missing" in error_of(data)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        config_from_dict(["inputs"])


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        config_from_dict(with_(MINIMAL, "mask.radius", 0))


# ---------------------------------------------------------------------------------------- files
def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_load_config_resolves_paths_against_the_yaml_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config_file = write_yaml(tmp_path / "configs" / "survey.yaml", MINIMAL)
    config = load_config(config_file)
    folder = (tmp_path / "configs").resolve()
    assert config.base_dir == folder
    assert config.path(config.inputs.root) == folder / "lenses"
    assert Path(config.store_location) == folder / "survey.zarr"
    assert config.path("/abs/file.fits") == Path("/abs/file.fits")


def test_load_config_relative_argument(tmp_path, monkeypatch):
    write_yaml(tmp_path / "sub" / "survey.yaml", MINIMAL)
    monkeypatch.chdir(tmp_path)
    config = load_config("sub/survey.yaml")
    assert Path(config.store_location) == (tmp_path / "sub" / "survey.zarr").resolve()


def test_store_urls_are_not_resolved(tmp_path):
    data = with_(MINIMAL, "output", {"store": "s3://bucket/survey.zarr"})
    config = load_config(write_yaml(tmp_path / "c.yaml", data))
    assert config.store_location == "s3://bucket/survey.zarr"


def test_invalid_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("inputs: {kind: folders\nmask: [\n")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(path)
    assert "broken.yaml" in str(info.value)


def test_invalid_content_names_the_file_and_key(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", with_(MINIMAL, "mask.radus", 2))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value) and "mask.radus" in str(info.value)


def test_empty_yaml_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ConfigError, match="empty.yaml"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file") as info:
        load_config(tmp_path / "nope.yaml")
    assert "nope.yaml" in str(info.value)


# ---------------------------------------------------------------------------------------- settings
def test_dataset_settings_follow_what_defines_a_dataset():
    base = config_from_dict(MINIMAL).dataset_settings()
    assert config_from_dict(MINIMAL).dataset_settings() == base
    assert config_from_dict(with_(MINIMAL, "mask.radius", 2.5)).dataset_settings() != base
    assert config_from_dict(with_(MINIMAL, "pixel_scales", 0.2)).dataset_settings() != base
    assert (
        config_from_dict(with_(MINIMAL, "sparse_operator.batch_size", 64)).dataset_settings()
        != base
    )


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("run.retries", 5),
        ("run.max_tasks_in_flight", 3),
        ("cluster", {"kind": "local", "n_workers": 1}),
        ("cluster", {"kind": "address", "address": "tcp://10.0.0.1:8786"}),
        ("output.store", "elsewhere.zarr"),
    ],
)
def test_dataset_settings_ignore_how_the_run_is_done(path, value):
    """Resuming must not be refused because the retry count or the cluster changed."""
    base = config_from_dict(MINIMAL).dataset_settings()
    assert config_from_dict(with_(MINIMAL, path, value)).dataset_settings() == base


def test_config_is_frozen():
    config = config_from_dict(MINIMAL)
    with pytest.raises(ValueError):
        config.pixel_scales = 0.2  # type: ignore[misc]
    assert isinstance(config, Config)


@pytest.mark.parametrize(
    ("operator", "words"),
    [
        ({"codec": "lz4", "level": 12}, "lz4"),
        ({"dtype": "float32", "keep_bits": 30}, "float32"),
        ({"level": 23}, "less than or equal to 22"),
    ],
)
def test_operator_storage_checked_up_front(operator, words):
    """Settings the store would refuse at the first operator write are config errors."""
    message = error_of(with_(MINIMAL, "sparse_operator", operator))
    assert "sparse_operator" in message and words in message


def test_operator_storage_valid_combinations():
    for operator in ({"codec": "zstd", "level": 22}, {"dtype": "float64", "keep_bits": 40}):
        config = config_from_dict(with_(MINIMAL, "sparse_operator", operator))
        stored = config.sparse_operator.model_dump()
        assert all(stored[key] == value for key, value in operator.items())
