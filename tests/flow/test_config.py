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
    CombinedMask,
    Config,
    FlagsMask,
    FoldersInput,
    LocalClusterConfig,
    ManifestInput,
    MefInput,
    TlsFiles,
    brief_repr,
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


# the mask settings as lenspipe recorded them before combined masks existed: a store made then
# keeps its settings hash (its datasets are not prepared again)
OLD_MASK_SETTINGS = [
    (
        {"kind": "circular", "radius": 3},
        {"kind": "circular", "radius": 3.0, "centre": [0.0, 0.0]},
    ),
    (
        {"kind": "annular", "inner_radius": 0.5, "outer_radius": 3, "centre": [0.1, -0.1]},
        {"kind": "annular", "inner_radius": 0.5, "outer_radius": 3.0, "centre": [0.1, -0.1]},
    ),
    (
        {"kind": "elliptical", "major_axis_radius": 2, "axis_ratio": 0.5},
        {
            "kind": "elliptical",
            "major_axis_radius": 2.0,
            "axis_ratio": 0.5,
            "angle": 0.0,
            "centre": [0.0, 0.0],
        },
    ),
    ({"kind": "file"}, {"kind": "file"}),
    (
        {"kind": "file", "bad_pixels": "mask"},
        {"kind": "file", "bad_pixels": "mask"},
    ),
]


@pytest.mark.parametrize(("mask", "recorded"), OLD_MASK_SETTINGS)
def test_the_mask_kinds_of_older_stores_keep_their_settings(mask, recorded):
    from pipeline.io.store.schema import settings_hash

    settings = config_from_dict(with_(MINIMAL, "mask", mask)).dataset_settings()
    assert settings["mask"] == recorded
    before = {**settings, "mask": recorded}
    assert settings_hash(settings) == settings_hash(before)


def test_the_settings_hash_of_a_store_made_before_combined_masks():
    """tests/data/store_d261856 was written by lenspipe d261856: its config still gives the
    recorded hash."""
    import json

    from pipeline.io.store.schema import settings_hash

    folder = Path(__file__).resolve().parents[1] / "data" / "store_d261856"
    config = load_config(folder / "survey.yaml")
    attrs = json.loads(
        (folder / "survey.zarr" / "datasets" / "lens_00003" / "zarr.json").read_text()
    )["attributes"]
    assert settings_hash(config.dataset_settings()) == attrs["settings_hash"]
    assert attrs["settings_hash"] == (
        "2c69af54cc9a0d808f7e98095de19ca0845c7e3bc5eb6080a895130f30f48b36"
    )


# ---------------------------------------------------------------------------------------- combine
COMBINE = [
    {"kind": "circular", "radius": 3},
    {"kind": "file"},
    {"kind": "flags", "bits": [0, 3]},
]


@pytest.mark.parametrize("spelling", [{}, {"kind": "combine"}])
def test_combined_mask_forms_and_settings(spelling):
    config = config_from_dict(
        with_(MINIMAL, "mask", {**spelling, "combine": COMBINE, "bad_pixels": "mask"})
    )
    assert isinstance(config.mask, CombinedMask)
    assert [m.kind for m in config.mask.members] == ["circular", "file", "flags"]
    assert config.mask.uses("file") and config.mask.uses("flags")
    assert not config.mask.uses("annular")
    assert config.dataset_settings()["mask"] == {
        "kind": "combine",
        "combine": [
            {"kind": "circular", "radius": 3.0, "centre": [0.0, 0.0]},
            {"kind": "file"},
            {"kind": "flags", "bits": [0, 3], "bit_mask": None},
        ],
        "bad_pixels": "mask",
    }


def test_flags_mask_alone_and_its_bit_mask():
    by_bits = config_from_dict(with_(MINIMAL, "mask", {"kind": "flags", "bits": [0, 3, 3]}))
    by_mask = config_from_dict(with_(MINIMAL, "mask", {"kind": "flags", "bit_mask": 9}))
    assert isinstance(by_bits.mask, FlagsMask) and isinstance(by_mask.mask, FlagsMask)
    assert by_bits.mask.mask_value == by_mask.mask.mask_value == 9
    top = config_from_dict(with_(MINIMAL, "mask", {"kind": "flags", "bits": [62]}))
    assert top.mask.mask_value == 2**62  # type: ignore[union-attr]
    assert by_bits.mask.members == (by_bits.mask,) and by_bits.mask.uses("flags")


@pytest.mark.parametrize(
    ("mask", "line"),
    [
        (
            {"kind": "flags", "bits": [0], "bit_mask": 1},
            "mask: give exactly one of bits (a list of bit numbers, e.g. [0, 3]) and bit_mask",
        ),
        ({"kind": "flags"}, "mask: give exactly one of bits"),
        (
            {"combine": [{"kind": "flags", "bits": [3, 70]}]},
            "mask.combine[0].bits[1]: Input should be less than or equal to 62 (got 70)",
        ),
        ({"kind": "flags", "bit_mask": 0}, "mask.bit_mask: Input should be greater than or equal"),
        ({"kind": "flags", "bits": []}, "mask.bits: List should have at least 1 item"),
        ({"combine": []}, "mask.combine: List should have at least 1 item"),
        (
            {"combine": [{"combine": [{"kind": "file"}]}]},
            "mask.combine[0]: a member of mask.combine cannot be a combination itself",
        ),
        (
            {"combine": [{"kind": "file"}, {"kind": "combine", "combine": [{"kind": "file"}]}]},
            "mask.combine[1]: a member of mask.combine cannot be a combination itself",
        ),
        (
            {"combine": [{"kind": "circular", "radius": 1, "bad_pixels": "mask"}]},
            "mask.combine[0]: bad_pixels applies to the whole mask: set mask.bad_pixels",
        ),
        (
            {"combine": [{"radius": 1}]},
            "mask.combine[0]: each member needs its kind: circular, annular, elliptical, file",
        ),
        (
            {"combine": [{"kind": "disc", "radius": 1}]},
            "mask.combine[0].kind: unknown kind 'disc': use one of 'circular', 'annular', "
            "'elliptical', 'file', 'flags'",
        ),
        (
            {"combine": [{"kind": "circular", "radius": -1}]},
            "mask.combine[0].radius: Input should be greater than 0 (got -1)",
        ),
        ({"kind": "combine", "combine": COMBINE, "radius": 3}, "mask.radius: unknown key"),
        ({"combine": COMBINE, "radius": 3}, "mask.radius: unknown key"),
    ],
)
def test_combined_and_flags_mask_errors_name_the_key(mask, line):
    message = error_of(with_(MINIMAL, "mask", mask))
    assert f"  {line}" in message, message


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


# ---------------------------------------------------------------------------------------- bounds
def test_new_defaults():
    config = config_from_dict(MINIMAL)
    assert config.run.task_timeout == 3600.0
    assert config.cluster.start_timeout == 600.0
    assert config.cluster.security == "none" and config.cluster.dashboard is False
    address = config_from_dict(with_(MINIMAL, "cluster", {"kind": "address", "address": "x:1"}))
    assert address.cluster.start_timeout == 600.0 and address.cluster.security == "none"
    for kind in ("slurm", "pbs"):
        jobqueue = config_from_dict(with_(MINIMAL, "cluster", {"kind": kind}))
        assert jobqueue.cluster.start_timeout == 3600.0 and jobqueue.cluster.security == "none"


LOCAL, ADDRESS, SLURM = {"kind": "local"}, {"kind": "address", "address": "x:1"}, {"kind": "slurm"}
WEEK = 7 * 86400

# (section to start from, dotted key, largest accepted value, first refused value above it)
BOUNDS = [
    (None, "run.retries", 100, 101),
    (None, "run.max_tasks_in_flight", 100_000, 100_001),
    (None, "run.task_timeout", WEEK, WEEK + 1),
    (LOCAL, "cluster.n_workers", 1024, 1025),
    (LOCAL, "cluster.start_timeout", WEEK, WEEK + 1),
    (ADDRESS, "cluster.timeout", 3600, 3601),
    (ADDRESS, "cluster.start_timeout", WEEK, WEEK + 1),
    (SLURM, "cluster.jobs", 10_000, 10_001),
    (SLURM, "cluster.start_timeout", WEEK, WEEK + 1),
    ({**SLURM, "adapt": {"maximum": 1}}, "cluster.adapt.maximum", 10_000, 10_001),
    ({**SLURM, "adapt": {"maximum": 10_000}}, "cluster.adapt.minimum", 10_000, 10_001),
    (None, "sparse_operator.batch_size", 2**20, 2**20 + 1),
    (None, "sparse_operator.memory_budget_mb", 2**20, 2**20 + 1),
    (None, "mask.radius", 1e5, 1.0001e5),
    (None, "pixel_scales", 3600, 3601),
    ({"kind": "uniform"}, "over_sampling.lp", 32, 33),
    ({"kind": "uniform"}, "over_sampling.pixelization", 32, 33),
    ({"kind": "adaptive"}, "over_sampling.sub_size_upper", 32, 33),
    ({"kind": "adaptive"}, "over_sampling.signal_to_noise_cut", 1e12, 1.1e12),
    ({"kind": "elliptical", "major_axis_radius": 1, "axis_ratio": 1}, "mask.angle", 360, 361),
    (None, "inputs.data_hdu", 9999, 10_000),
]


def _bounded(start, key, value) -> dict:
    section = key.split(".")[0]
    data = with_(MINIMAL, section, start) if start is not None else MINIMAL
    return with_(data, key, value)


def test_adapt_scales_between_minimum_and_maximum_jobs():
    adaptive = {**SLURM, "adapt": {"maximum": 4}}
    cluster = config_from_dict(with_(MINIMAL, "cluster", adaptive)).cluster
    assert (cluster.adapt.minimum, cluster.adapt.maximum) == (0, 4)
    assert cluster.first_jobs == 1  # one job at once: a failing submission is seen at once
    adaptive["adapt"] = {"minimum": 3, "maximum": 3}
    assert config_from_dict(with_(MINIMAL, "cluster", adaptive)).cluster.first_jobs == 3
    fixed = config_from_dict(with_(MINIMAL, "cluster", {**SLURM, "jobs": 5})).cluster
    assert fixed.adapt is None and fixed.first_jobs == 5


@pytest.mark.parametrize(
    ("adapt", "words"),
    [
        ({"minimum": 3, "maximum": 2}, "minimum (3) must be at most maximum (2)"),
        ({"minimum": 0, "maximum": 0}, "cluster.adapt.maximum: Input should be greater than or"),
        ({"minimum": -1, "maximum": 2}, "cluster.adapt.minimum: Input should be greater than or"),
        ({"minimum": 1}, "cluster.adapt.maximum"),
        ({"maximum": 2, "max": 3}, "cluster.adapt.max"),
    ],
)
def test_bad_adapt_is_refused(adapt, words):
    message = error_of(with_(MINIMAL, "cluster", {**SLURM, "adapt": adapt}))
    assert words in message, message


def test_jobs_and_adapt_are_exclusive():
    message = error_of(with_(MINIMAL, "cluster", {**SLURM, "jobs": 2, "adapt": {"maximum": 4}}))
    assert "give either jobs (a fixed number of batch jobs) or adapt" in message, message


@pytest.mark.parametrize(("start", "key", "largest", "refused"), BOUNDS, ids=[b[1] for b in BOUNDS])
def test_every_number_has_an_upper_bound(start, key, largest, refused):
    config = config_from_dict(_bounded(start, key, largest))
    node = config
    for part in key.split("."):
        node = getattr(node, part)
    assert node == largest
    for value in (refused, 1e23, 1e308):
        message = error_of(_bounded(start, key, value))
        line = next((x for x in message.splitlines() if x.strip().startswith(f"{key}:")), None)
        assert line is not None, message
        assert "less than or equal to" in line or "at most" in line, line


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("mask.centre", [0.0, 1e6], "less than or equal to 100000"),
        ("mask.centre", [-1e6, 0.0], "greater than or equal to -100000"),
        ("pixel_scales", [0.1, 1e300], "at most 3600"),
        (
            "over_sampling",
            {"kind": "radial", "sub_size_list": [2, 1], "radial_list": [1e9]},
            "100000",
        ),
        ("over_sampling", {"kind": "radial", "sub_size_list": [64, 1], "radial_list": [1]}, "32"),
        ("run.retries", -1, "greater than or equal to 0"),
        ("run.task_timeout", 0, "greater than 0"),
        ("run.task_timeout", float("inf"), "finite"),
        ("run.task_timeout", float("nan"), "finite"),
    ],
)
def test_bounds_of_lists_and_pairs(path, value, words):
    message = error_of(with_(MINIMAL, path, value))
    assert path.split(".")[0] in message and words in message, message


@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_start_timeout_positive_and_finite(value):
    message = error_of(with_(MINIMAL, "cluster", {"kind": "local", "start_timeout": value}))
    assert "cluster.start_timeout:" in message


def test_huge_integral_floats_reach_the_bound():
    """1e23 for an int field: the bound is named (pydantic alone says "unable to parse")."""
    message = error_of(with_(MINIMAL, "run.retries", 1e23))
    assert "run.retries: Input should be less than or equal to 100" in message
    assert "(got 99999999999999991611392)" in message


@pytest.mark.parametrize(
    ("value", "ok"),
    [("auto", True), ("4GiB", True), ("500 MB", True), ("2e9", True), ("lots", False)]
    + [("1e30GiB", False), ("0", False), ("", False)],
)
def test_memory_limit_is_a_bounded_size(value, ok):
    data = with_(MINIMAL, "cluster", {"kind": "local", "memory_limit": value})
    if ok:
        assert config_from_dict(data).cluster.memory_limit == value
    else:
        assert "cluster.memory_limit: must be auto or a size" in error_of(data)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"cores": 1e6}, "option 'cores' must be an integer from 1 to 1024"),
        ({"processes": 0}, "option 'processes' must be an integer from 1 to 1024"),
        ({"death_timeout": float("inf")}, "must be finite and at most 1e+15"),
        ({"security": True}, "use cluster.security"),
        ({"protocol": "tls://"}, "use cluster.security"),
    ],
)
def test_jobqueue_options_checked(options, words):
    message = error_of(with_(MINIMAL, "cluster", {"kind": "slurm", "options": options}))
    assert "cluster.options:" in message and words in message, message


def test_storage_options_numbers_finite():
    message = error_of(with_(MINIMAL, "output.storage_options", {"block_size": 1e300}))
    assert "output.storage_options:" in message and "'block_size'" in message


# ---------------------------------------------------------------------------------------- reprs
def test_huge_values_are_truncated_in_messages():
    values = ["x" * 1_000_000, list(range(100_000)), {f"k{i}": i for i in range(10_000)}]
    values += [10**5000, -(10**5000), [[[[[[["deep"]]]]]]]]
    for value in values:
        message = error_of(with_(MINIMAL, "mask.radius", value))
        assert "mask.radius:" in message
        assert len(message) < 600, message[:2000]
    assert "integer of about 5001 digits" in error_of(with_(MINIMAL, "run.retries", 10**5000))
    assert "..." in error_of(with_(MINIMAL, "mask.radius", "x" * 1000))


def test_brief_repr():
    assert brief_repr(3.5) == "3.5" and brief_repr("abc") == "'abc'" and brief_repr(True) == "True"
    assert len(brief_repr("y" * 10_000)) <= 200
    assert brief_repr(10**300).startswith("<integer of about 301 digits")
    assert len(brief_repr([["a" * 80] * 50] * 50)) <= 200
    # a value shared a billion times over (what YAML aliases build) is never expanded
    shared: list = ["lol"] * 10
    for _ in range(9):
        shared = [shared] * 10
    assert len(brief_repr(shared)) <= 200


def test_many_errors_are_capped():
    data = with_(MINIMAL, "over_sampling", {"kind": "radial", "sub_size_list": [0] * 2000})
    data["over_sampling"]["radial_list"] = [1.0] * 1999
    message = error_of(data)
    assert "more keys with errors" in message and len(message) < 4000


# ---------------------------------------------------------------------------------------- store
@pytest.mark.parametrize("store", ["", "   ", "\t"])
def test_empty_store_refused(store):
    message = error_of(with_(MINIMAL, "output.store", store))
    assert "output.store: the store location is empty" in message


@pytest.mark.parametrize("store", [".", "./", "sub/..", "..", "/", "CONFIG_FOLDER", "~"])
def test_store_in_the_config_folder_or_above_refused(tmp_path, monkeypatch, store):
    folder = tmp_path / "home" / "project"
    folder.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    store = str(folder) if store == "CONFIG_FOLDER" else store
    path = write_yaml(folder / "survey.yaml", with_(MINIMAL, "output.store", store))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "output.store: the store resolves to" in message
    assert "give it a folder of its own" in message


def test_store_in_the_current_directory_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    path = write_yaml(tmp_path / "configs" / "s.yaml", with_(MINIMAL, "output.store", str(work)))
    with pytest.raises(ConfigError, match="resolves to the current directory"):
        load_config(path)


@pytest.mark.parametrize("store", ["survey.zarr", "out/survey.zarr", "s3://bucket/s.zarr"])
def test_store_of_its_own_accepted(tmp_path, store):
    config = load_config(write_yaml(tmp_path / "s.yaml", with_(MINIMAL, "output.store", store)))
    assert config.output.store == store


def test_store_url_without_a_path_refused():
    assert "store URL has no path" in error_of(with_(MINIMAL, "output.store", "s3://"))


# ---------------------------------------------------------------------------------------- security
def test_security_tls_for_the_local_cluster():
    config = config_from_dict(with_(MINIMAL, "cluster", {"kind": "local", "security": "tls"}))
    assert config.cluster.security == "tls"


@pytest.mark.parametrize("kind", ["address", "slurm", "pbs"])
def test_temporary_tls_refused_outside_the_local_cluster(kind):
    cluster = {"kind": kind, "security": "tls"}
    if kind == "address":
        cluster["address"] = "tls://10.0.0.5:8786"
    message = error_of(with_(MINIMAL, "cluster", cluster))
    line = next(x for x in message.splitlines() if "cluster.security:" in x)
    assert "only works for the embedded cluster (kind: local)" in line and "ca_file" in line


def test_security_files_resolved_against_the_config_folder(tmp_path):
    cluster = {
        "kind": "address",
        "address": "tls://10.0.0.5:8786",
        "security": {"ca_file": "tls/ca.pem", "cert": "/etc/dask/cert.pem", "key": "tls/key.pem"},
    }
    config = load_config(write_yaml(tmp_path / "c" / "s.yaml", with_(MINIMAL, "cluster", cluster)))
    security = config.cluster.security
    assert isinstance(security, TlsFiles)
    assert security.ca_file == (tmp_path / "c" / "tls" / "ca.pem").resolve()
    assert security.cert == Path("/etc/dask/cert.pem")
    assert security.key == (tmp_path / "c" / "tls" / "key.pem").resolve()
    slurm = {"kind": "slurm", "security": {"ca_file": "ca.pem", "cert": "both.pem"}}
    config = load_config(write_yaml(tmp_path / "c" / "j.yaml", with_(MINIMAL, "cluster", slurm)))
    assert config.cluster.security.cert == (tmp_path / "c" / "both.pem").resolve()
    assert config.cluster.security.key is None


@pytest.mark.parametrize(
    ("cluster", "words"),
    [
        ({"kind": "local", "security": {"ca_file": "a", "cert": "b"}}, "use security: tls"),
        ({"kind": "local", "security": "ssl"}, "'none' or 'tls'"),
        ({"kind": "slurm", "security": {"cert": "b"}}, "required key is missing"),
        ({"kind": "slurm", "security": {"ca_file": "a", "cert": "b", "keyy": "c"}}, "unknown key"),
        (
            {"kind": "address", "address": "tcp://h:1", "security": {"ca_file": "a", "cert": "b"}},
            "tls://host:port",
        ),
        ({"kind": "address", "address": "tls://h:1"}, "needs credentials"),
    ],
)
def test_security_mistakes(cluster, words):
    message = error_of(with_(MINIMAL, "cluster", cluster))
    assert "cluster" in message and words in message, message


# ---------------------------------------------------------------------------------------- YAML
BASE_YAML = """\
inputs: {kind: folders, root: lenses}
pixel_scales: 0.1
mask: {kind: circular, radius: 3.0}
output: {store: survey.zarr}
"""


def _laughs(levels: int = 9, width: int = 10, name: str = "l") -> str:
    """A "billion laughs" chain: &l0 holds `width` strings, each &lN holds `width` *l(N-1)."""
    lines = [f"  - &{name}0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*{name}{level - 1}"] * width)
        lines.append(f"  - &{name}{level} [{refs}]")
    return "\n".join(lines)


def _bomb_error(tmp_path, text: str) -> str:
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["radius", "options", "unknown-key", "top"])
def test_yaml_alias_bomb_refused_before_it_is_expanded(tmp_path, where):
    """10**10 strings by reference: refused from the node graph, never built or printed."""
    # anchors come before their aliases: the chain sits under `laughs`, an unknown key (the
    # document is refused before validation could name it)
    bomb = "laughs:\n" + _laughs() + "\n"
    text = (
        bomb
        + {
            "radius": BASE_YAML.replace("radius: 3.0", "radius: *l9"),
            "options": BASE_YAML + "cluster:\n  kind: slurm\n  options: {x: *l9}\n",
            "unknown-key": BASE_YAML + "extra: *l9\n",
            "top": BASE_YAML,
        }[where]
    )
    message = _bomb_error(tmp_path, text)
    assert "bomb.yaml" in message
    assert "YAML aliases that expand to more than 100000 values (limit 100000)" in message
    assert len(message) < 500


@pytest.mark.timeout(60)
def test_too_many_aliases_refused(tmp_path):
    refs = ", ".join(["*a"] * 101)
    message = _bomb_error(tmp_path, BASE_YAML + f"x: &a 1\ny: [{refs}]\n")
    assert "uses more than 100 YAML aliases (limit 100)" in message


@pytest.mark.timeout(60)
def test_recursive_alias_refused(tmp_path):
    text = BASE_YAML + "cluster: {kind: slurm, options: &o {again: *o}}\n"
    assert "recursive value" in _bomb_error(tmp_path, text)


def test_a_few_aliases_are_fine(tmp_path):
    text = BASE_YAML.replace("radius: 3.0", "radius: &r 3.0") + (
        "over_sampling: {kind: radial, sub_size_list: [4, 2], radial_list: [*r]}\n"
        "cluster: {kind: slurm, options: &opts {cores: 4, memory: 8GB}}\n"
    )
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    config = load_config(path)
    assert config.over_sampling.radial_list == [3.0]
    assert config.cluster.options == {"cores": 4, "memory": "8GB"}


@pytest.mark.timeout(30)
def test_config_that_is_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "survey.yaml"
    os.mkfifo(fifo)  # reading it would block for ever
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(fifo)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config("/dev/zero")


def test_config_file_too_large(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text(BASE_YAML + "# " + "x" * (5 * 2**20) + "\n")
    with pytest.raises(ConfigError, match="limit 4194304"):
        load_config(path)


def test_integer_too_long_for_python(tmp_path):
    path = tmp_path / "digits.yaml"
    path.write_text(BASE_YAML + "run: {retries: " + "9" * 5000 + "}\n")
    with pytest.raises(ConfigError, match="has a value YAML cannot read") as info:
        load_config(path)
    assert len(str(info.value)) < 500
