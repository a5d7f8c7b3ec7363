"""The example configs in configs/: each validates (without its data existing) and says what
its comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.flow.config import (
    AdaptiveOverSampling,
    AddressCluster,
    AnnularMask,
    CircularMask,
    CombinedMask,
    FlagsMask,
    FoldersInput,
    JobqueueCluster,
    LocalClusterConfig,
    ManifestInput,
    MefInput,
    RadialOverSampling,
    load_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FILES = sorted(CONFIGS.glob("*.yaml"))


def test_the_examples_exist():
    names = {p.name for p in FILES}
    assert {"demo.yaml", "manifest.yaml", "euclid_mef.yaml", "slurm.yaml", "s3.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_example_validates_and_is_commented(path):
    config = load_config(path)
    assert config.base_dir == CONFIGS
    text = path.read_text()
    assert text.startswith("#")  # a header saying what the example is for
    assert sum(1 for line in text.splitlines() if "#" in line) >= 10


def test_demo():
    config = load_config(CONFIGS / "demo.yaml")
    assert isinstance(config.inputs, ManifestInput)
    # a folder made by `lenspipe simulate mock-survey`, next to configs/
    assert config.path(config.inputs.path) == CONFIGS / "../mock-survey/manifest.csv"
    assert Path(config.store_location) == CONFIGS / "../mock-survey/demo.zarr"
    assert config.pixel_scales == 0.1
    assert config.mask.kind == "circular" and config.mask.radius == 3.0
    assert isinstance(config.cluster, LocalClusterConfig) and config.cluster.n_workers == 2
    assert config.run.retries == 2
    assert config.run.task_timeout == 3600
    cluster = config.cluster
    assert (cluster.dashboard, cluster.security, cluster.start_timeout) == (False, "none", 600)
    # every section is spelled out
    data_keys = {"inputs", "pixel_scales", "mask", "over_sampling", "sparse_operator"}
    assert data_keys | {"output", "cluster", "run"} <= set(config.model_fields_set)


def test_manifest():
    config = load_config(CONFIGS / "manifest.yaml")
    assert isinstance(config.inputs, ManifestInput)
    assert config.path(config.inputs.path).name == "manifest.csv"
    assert isinstance(config.over_sampling, RadialOverSampling)
    assert config.over_sampling.sub_size_list == [16, 8, 4]
    assert config.over_sampling.radial_list == [0.3, 1.0]
    text = (CONFIGS / "manifest.yaml").read_text()
    comments = "\n".join(line for line in text.splitlines() if line.lstrip().startswith("#"))
    for column in (
        "name",
        "data",
        "noise_map",
        "psf",
        "data_hdu",
        "mask",
        "pixel_scale",
        "mask_radius",
        "mask_centre_y",
        "mask_centre_x",
    ):
        assert f"#   {column}" in comments or f", {column}" in comments, column


def test_euclid_mef():
    config = load_config(CONFIGS / "euclid_mef.yaml")
    assert isinstance(config.inputs, MefInput)
    assert config.pixel_scales == "header" and config.pixel_scales_check == "strict"
    bands = config.inputs.bands
    assert list(bands) == ["VIS", "NIR_Y", "NIR_J", "NIR_H", "DES_G", "DES_R", "DES_I", "DES_Z"]
    for name, band in bands.items():
        hdus = (band.data, band.noise_map, band.psf, band.flags)
        assert hdus == tuple(f"{name}_{suffix}" for suffix in ("BGSUB", "RMS", "PSF", "FLAG"))
    mask = config.mask
    assert isinstance(mask, CombinedMask) and mask.bad_pixels == "mask"
    circle, flags = mask.combine
    assert isinstance(circle, CircularMask) and circle.radius == 2.5
    assert isinstance(flags, FlagsMask) and flags.bits == [2]
    assert config.psf.trim_fraction == 0.999
    assert isinstance(config.over_sampling, AdaptiveOverSampling)
    assert config.sparse_operator.dtype == "float32"


def test_slurm():
    config = load_config(CONFIGS / "slurm.yaml")
    assert isinstance(config.inputs, FoldersInput)
    cluster = config.cluster
    assert isinstance(cluster, JobqueueCluster) and cluster.kind == "slurm"
    assert cluster.jobs == 10
    assert cluster.start_timeout == 3600 and cluster.security == "none"
    assert config.run.task_timeout == 3600
    assert cluster.options == {
        "cores": 16,
        "memory": "64GB",
        "queue": "compute",
        "walltime": "04:00:00",  # a string, not YAML's sexagesimal 14400
        "account": "my-project",
    }
    assert config.store_location == "/scratch/my-project/survey.zarr"  # absolute: unchanged


def test_slurm_options_make_a_job_script():
    """The options are ones dask_jobqueue.SLURMCluster accepts (nothing is submitted)."""
    pytest.importorskip("dask_jobqueue")  # before dask.config.set: it adds config defaults
    import dask

    from pipeline.flow.cluster import job_script

    config = load_config(CONFIGS / "slurm.yaml")
    # a free port for the scheduler dask-jobqueue starts (8787 may be taken on this machine)
    with dask.config.set({"jobqueue.slurm.scheduler-options": {"dashboard_address": ":0"}}):
        script = job_script(config.cluster)
    for line in ("#SBATCH -p compute", "#SBATCH -A my-project", "#SBATCH -t 04:00:00"):
        assert line in script
    assert "--cpus-per-task=16" in script
    assert "export OMP_NUM_THREADS='1'" in script


def test_s3():
    config = load_config(CONFIGS / "s3.yaml")
    assert config.output.store == "s3://my-bucket/survey.zarr"
    assert config.store_location == "s3://my-bucket/survey.zarr"  # URLs are not resolved
    options = config.output.storage_options
    assert options["endpoint_url"].startswith("https://")
    # credentials come from the environment, never from the file
    credentials = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key"}
    assert not credentials & {k.lower() for k in options}
    assert not credentials & {k.lower() for k in options.get("client_kwargs", {})}
    assert "AWS_ACCESS_KEY_ID" in (CONFIGS / "s3.yaml").read_text()  # the comments say how
    assert isinstance(config.mask, AnnularMask)
    assert config.pixel_scales == (0.1, 0.1)
    assert isinstance(config.cluster, AddressCluster)
    assert config.cluster.address == "tcp://10.0.0.5:8786"
