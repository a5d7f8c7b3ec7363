"""The survey configuration: pydantic models of the YAML file (DESIGN §6).

Unknown keys are errors; every error names the key path and says how to fix it. Relative paths
are resolved against the folder of the config file. :func:`load_config` is the one entry point.
"""

from __future__ import annotations

import math
import os
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.exc import ConfigError

__all__ = [
    "AddressCluster",
    "Config",
    "FoldersInput",
    "JobqueueCluster",
    "LocalClusterConfig",
    "ManifestInput",
    "MefInput",
    "load_config",
    "config_from_dict",
    "operator_batch_rows",
    "operator_row_bytes",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------------------------------- inputs
class FoldersInput(_Model):
    """One dataset per folder matching ``pattern`` under ``root``, with the same file names in
    each folder. The dataset name is the folder name."""

    kind: Literal["folders"] = "folders"
    root: Path = Field(description="Folder holding one sub-folder per lens.")
    pattern: str = Field("*", description="Glob of dataset folders under root.")
    data: str = Field("data.fits", description="Image file name in each folder.")
    noise_map: str = Field("noise_map.fits", description="Noise-map (RMS) file name.")
    psf: str = Field("psf.fits", description="PSF file name.")
    mask: str | None = Field(None, description="Optional mask FITS file name (non-zero = masked).")
    data_hdu: int | str = 0
    noise_map_hdu: int | str = 0
    psf_hdu: int | str = 0
    mask_hdu: int | str = 0


class ManifestInput(_Model):
    """A CSV with one row per dataset: columns ``name, data, noise_map, psf`` and optionally
    ``data_hdu, noise_map_hdu, psf_hdu, mask, mask_hdu, pixel_scale, mask_radius,
    mask_centre_y, mask_centre_x``. Paths are relative to the CSV's folder."""

    kind: Literal["manifest"] = "manifest"
    path: Path = Field(description="The manifest CSV file.")


class MefBand(_Model):
    """EXTNAMEs of one band's HDUs inside a multi-extension FITS cutout."""

    data: str
    noise_map: str
    psf: str
    mask: str | None = None


class MefInput(_Model):
    """Multi-extension FITS cutouts (e.g. Euclid MER: ``VIS_BGSUB``, ``VIS_RMS``, ``VIS_PSF``):
    one dataset per file and band, named ``<file stem>_<band>``."""

    kind: Literal["mef"] = "mef"
    root: Path
    pattern: str = "*.fits"
    bands: dict[str, MefBand] = Field(min_length=1)


Inputs = Annotated[FoldersInput | ManifestInput | MefInput, Field(discriminator="kind")]


# ---------------------------------------------------------------------------------------- masks
class CircularMask(_Model):
    kind: Literal["circular"] = "circular"
    radius: float = Field(gt=0, description="arcsec")
    centre: tuple[float, float] = (0.0, 0.0)


class AnnularMask(_Model):
    kind: Literal["annular"] = "annular"
    inner_radius: float = Field(ge=0, description="arcsec")
    outer_radius: float = Field(gt=0, description="arcsec")
    centre: tuple[float, float] = (0.0, 0.0)

    @model_validator(mode="after")
    def _ordered(self) -> AnnularMask:
        if self.inner_radius >= self.outer_radius:
            raise ValueError("inner_radius must be smaller than outer_radius")
        return self


class EllipticalMask(_Model):
    kind: Literal["elliptical"] = "elliptical"
    major_axis_radius: float = Field(gt=0, description="arcsec")
    axis_ratio: float = Field(gt=0, le=1)
    angle: float = Field(0.0, description="degrees counter-clockwise from +x")
    centre: tuple[float, float] = (0.0, 0.0)


class FileMask(_Model):
    """Use each dataset's mask FITS file (folders ``mask:``, manifest ``mask`` column or MEF band
    ``mask`` EXTNAME)."""

    kind: Literal["file"] = "file"


MaskConfig = Annotated[
    CircularMask | AnnularMask | EllipticalMask | FileMask, Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------- sampling
class UniformOverSampling(_Model):
    kind: Literal["uniform"] = "uniform"
    lp: int = Field(4, ge=1)
    pixelization: int = Field(4, ge=1)


class RadialOverSampling(_Model):
    """Sizes by distance to the mask centre: ``sub_size_list[i]`` inside ``radial_list[i]``."""

    kind: Literal["radial"] = "radial"
    sub_size_list: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    radial_list: list[float] = Field(min_length=0)
    pixelization: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _lengths(self) -> RadialOverSampling:
        if len(self.radial_list) != len(self.sub_size_list) - 1:
            raise ValueError("radial_list needs exactly one entry fewer than sub_size_list")
        return self


class AdaptiveOverSampling(_Model):
    """Sizes by signal-to-noise: ``sub_size_upper`` where S/N > cut, else ``sub_size_lower``."""

    kind: Literal["adaptive"] = "adaptive"
    signal_to_noise_cut: float = Field(5.0, gt=0)
    sub_size_lower: int = Field(2, ge=1)
    sub_size_upper: int = Field(4, ge=1)
    pixelization: int = Field(4, ge=1)


OverSamplingConfig = Annotated[
    UniformOverSampling | RadialOverSampling | AdaptiveOverSampling, Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------- operator
class OperatorConfig(_Model):
    """The sparse operator: backend, rows per task, storage."""

    backend: Literal["numpy", "numba", "jax"] = "numpy"
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Most rows (unmasked pixels) per operator task and Zarr chunk, or 'auto': as "
        "many as fit in memory_budget_mb (see operator_batch_rows). A dataset of N pixels gets "
        "ceil(N / batch_size) tasks of equal rows (balanced_batch_rows).",
    )
    memory_budget_mb: float | None = Field(
        None,
        gt=0,
        description="Memory for one operator task when batch_size is 'auto' (MiB). Default: a "
        "quarter of cluster.memory_limit for a local cluster with an explicit limit, else 512.",
    )
    dtype: Literal["float64", "float32"] = "float64"
    codec: Literal["lz4", "zstd", "none"] = "lz4"
    level: int = Field(1, ge=0, le=22, description="lz4 0-9, zstd 0-22")
    keep_bits: int | None = Field(None, ge=1, le=52, description="Mantissa bits kept (lossy).")
    shuffle: bool = Field(False, description="Byte-shuffle before lz4 (slower, ~2% smaller).")
    enabled: bool = Field(True, description="Set false to prepare datasets without W.")

    @model_validator(mode="after")
    def _storage(self) -> OperatorConfig:
        # caught here, not when the first operator batch fails to write
        if self.codec == "lz4" and self.level > 9:
            raise ValueError(f"level {self.level} is too high for codec lz4: use 0-9 (zstd: 0-22)")
        if self.keep_bits is not None and self.dtype == "float32" and self.keep_bits > 23:
            raise ValueError(f"keep_bits {self.keep_bits} exceeds the 23 mantissa bits of float32")
        return self


class OutputConfig(_Model):
    store: str = Field(description="Local path or fsspec URL (s3://bucket/survey.zarr).")
    storage_options: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------------------------------- cluster
class LocalClusterConfig(_Model):
    """An embedded ``distributed.LocalCluster``: worker processes, one thread each."""

    kind: Literal["local"] = "local"
    n_workers: int | None = Field(None, ge=1, description="Default: one per core.")
    memory_limit: str = Field("auto", description="Per worker, e.g. '4GiB'.")
    dashboard: bool = False


class AddressCluster(_Model):
    """Join an existing scheduler."""

    kind: Literal["address"] = "address"
    address: str = Field(description="e.g. tcp://10.0.0.5:8786")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for the scheduler.")


class JobqueueCluster(_Model):
    """SLURM or PBS via dask-jobqueue; ``options`` are passed to SLURMCluster/PBSCluster."""

    kind: Literal["slurm", "pbs"]
    jobs: int = Field(
        1, ge=1, description="Number of batch jobs to start (cluster.scale(jobs=...))."
    )
    options: dict[str, Any] = Field(default_factory=dict)


ClusterConfig = Annotated[
    LocalClusterConfig | AddressCluster | JobqueueCluster, Field(discriminator="kind")
]


class RunConfig(_Model):
    retries: int = Field(2, ge=0, description="Retries of a failed task (worker loss counts).")
    max_tasks_in_flight: int = Field(64, ge=1, description="Bound on submitted, unfinished tasks.")
    progress: bool = True
    verify: bool = Field(
        False,
        description="Also decode every operator chunk of complete datasets and recompute damaged "
        "batches (reads the whole store; by default only resumed datasets are checked).",
    )
    performance_report: str | None = Field(None, description="Write a Dask HTML report here.")


class Config(_Model):
    """A survey run."""

    inputs: Inputs
    pixel_scales: float | tuple[float, float] | Literal["header"]
    mask: MaskConfig
    over_sampling: OverSamplingConfig = Field(default_factory=UniformOverSampling)
    sparse_operator: OperatorConfig = Field(default_factory=OperatorConfig)
    output: OutputConfig
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    base_dir: Path = Field(Path("."), exclude=True, description="Folder of the config file.")

    @field_validator("pixel_scales", mode="before")
    @classmethod
    def _form(cls, value):
        def number(v) -> bool:
            return isinstance(v, int | float) and not isinstance(v, bool)

        if isinstance(value, str) and value != "header":
            try:
                value = float(value)
            except ValueError:
                pass
        if value == "header":
            return value
        if number(value) or (
            isinstance(value, list | tuple) and len(value) == 2 and all(map(number, value))
        ):
            values = (value,) if number(value) else value
            if not all(v > 0 and math.isfinite(v) for v in values):
                raise ValueError("pixel scales must be positive and finite (arcsec per pixel)")
            return value
        raise ValueError("must be a number, a pair [sy, sx] or 'header' (arcsec per pixel)")

    def path(self, value: str | os.PathLike) -> Path:
        """Resolve a path of the config against the config file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def store_location(self) -> str:
        """The store as a string: URLs unchanged, local paths resolved."""
        store = self.output.store
        return store if "://" in store else os.fspath(self.path(store))

    def dataset_settings(self) -> dict[str, Any]:
        """Settings that define a dataset's prepared arrays and operator (hashed per dataset:
        a change refuses to resume over the old result)."""
        return {
            "pixel_scales": self.pixel_scales,
            "mask": self.mask.model_dump(mode="json"),
            "over_sampling": self.over_sampling.model_dump(mode="json"),
            # the budget only groups rows into tasks (each dataset stores its batch size): not
            # a setting of the result, and leaving it out keeps older stores' hashes valid
            "sparse_operator": self.sparse_operator.model_dump(
                mode="json", exclude={"memory_budget_mb"}
            ),
        }

    def operator_memory_budget(self) -> int:
        """Bytes one operator task may use when ``sparse_operator.batch_size`` is ``'auto'``:
        ``memory_budget_mb``, else a quarter of an explicit local ``cluster.memory_limit`` (a
        worker also holds ~150-250 MB of libraries, and Dask's nanny kills it at 95% of the
        limit), else 512 MiB."""
        if self.sparse_operator.memory_budget_mb is not None:
            return int(self.sparse_operator.memory_budget_mb * 2**20)
        cluster = self.cluster
        if isinstance(cluster, LocalClusterConfig) and cluster.memory_limit not in ("auto", ""):
            from dask.utils import parse_bytes

            try:
                limit = parse_bytes(cluster.memory_limit)
            except ValueError:
                limit = 0
            if limit > 0:
                return limit // 4
        return DEFAULT_MEMORY_BUDGET


DEFAULT_MEMORY_BUDGET = 512 * 2**20
MIN_BATCH_ROWS, MAX_BATCH_ROWS = 64, 65536


def operator_row_bytes(kernel_shape: tuple[int, int]) -> int:
    """Peak bytes per operator row of one task (numpy and numba backends): the float64 output
    row (``n_offsets * 8``), the gathered inverse-variance patch (``ky * kx * 8``), and three more
    output-sized buffers while writing (Zarr's chunk buffer, the compressed bytes, the checksummed
    copy). Measured peak for a 21x21 PSF: ~30 kB per row; this gives 37 kB."""
    ky, kx = (int(k) for k in kernel_shape)
    n_offsets = ((2 * ky - 1) * (2 * kx - 1) + 1) // 2
    return 4 * n_offsets * 8 + ky * kx * 8


def operator_batch_rows(kernel_shape: tuple[int, int], n_pixels: int, budget_bytes: int) -> int:
    """Rows per operator batch that fit ``budget_bytes``: ``budget // operator_row_bytes``,
    clamped to [64, 65536] and to the dataset's pixel count (one batch for a small dataset)."""
    rows = int(budget_bytes) // operator_row_bytes(kernel_shape)
    rows = min(max(rows, MIN_BATCH_ROWS), MAX_BATCH_ROWS)
    return max(1, min(rows, int(n_pixels)))


def config_from_dict(data: dict[str, Any], base_dir: str | os.PathLike = ".") -> Config:
    """Validate a config mapping; raise :class:`ConfigError` naming every bad key."""
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping of keys (inputs, mask, output, ...)")
    try:
        return Config.model_validate({**data, "base_dir": Path(base_dir)})
    except ValidationError as err:
        raise ConfigError(_explain(err, data)) from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}': {err.strerror or err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    try:
        return config_from_dict(data, path.parent.resolve())
    except ConfigError as err:
        raise ConfigError(f"config file '{path}':\n{err}") from None


def _kinds(field: str) -> str:
    """The ``kind`` values of a top-level union section (``mask``, ``cluster``, ...)."""
    info = Config.model_fields.get(field)
    kinds: list[str] = []
    for member in typing.get_args(info.annotation) if info is not None else ():
        kind = getattr(member, "model_fields", {}).get("kind")
        if kind is not None:
            kinds += [repr(k) for k in typing.get_args(kind.annotation)]
    return ", ".join(kinds)


def _key_path(loc: tuple, data: Any) -> str:
    """The key path of an error as the user wrote it: pydantic's ``loc`` without the union tags
    (``mask.circular.radius`` -> ``mask.radius``) and union member labels (``float``, ``str``)."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(f"[{part}]")
            node = node[part]
            continue
        elif isinstance(node, dict) and node.get("kind") == part:
            continue  # the tag of a discriminated union
        elif not isinstance(node, dict) and isinstance(part, str):
            continue  # a member of a plain union (int | str)
        else:
            node = None
        parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def _explain(err: ValidationError, data: Any = None) -> str:
    found: dict[str, list[str]] = {}
    for item in err.errors():
        loc = _key_path(item["loc"], data)
        kind = item["type"]
        msg = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        if kind == "extra_forbidden":
            hint = "unknown key: remove it or check its spelling (see docs/configuration.md)"
        elif kind == "missing":
            hint = "required key is missing: add it"
        elif kind == "union_tag_invalid":
            loc += ".kind"
            tag, expected = item["ctx"]["tag"], item["ctx"]["expected_tags"]
            hint = f"unknown kind {tag!r}: use one of {expected}"
        elif kind == "union_tag_not_found":
            loc += ".kind"
            kinds = _kinds(loc.split(".")[0])
            hint = "required key is missing: add it" + (f" (one of {kinds})" if kinds else "")
        elif isinstance(value, dict):
            hint = msg  # a check of a whole section: the message names its keys
        else:
            hint = f"{msg} (got {value!r})"
        found.setdefault(loc, [])
        if hint not in found[loc]:
            found[loc].append(hint)
    lines = [f"  {loc}: {'; or '.join(hints)}" for loc, hints in found.items()]
    return "invalid configuration:\n" + "\n".join(lines)
