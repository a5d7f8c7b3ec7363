"""The survey configuration: pydantic models of the YAML file (DESIGN §6).

Unknown keys are errors; every error names the key path and says how to fix it. Relative paths
are resolved against the folder of the config file. :func:`load_config` is the one entry point.

Every number has an upper bound (a value like ``1e23`` or ``1e308`` is a typo, and once accepted
it made runs wait for ever); error messages show at most ~200 characters of a value; a YAML file
whose aliases expand beyond :data:`MAX_YAML_NODES` nodes ("billion laughs") is refused before it is
turned into Python objects.
"""

from __future__ import annotations

import math
import os
import reprlib
import stat
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.exc import ConfigError

__all__ = [
    "AddressCluster",
    "Config",
    "FoldersInput",
    "JobqueueCluster",
    "LocalClusterConfig",
    "ManifestInput",
    "MefInput",
    "TlsFiles",
    "load_config",
    "config_from_dict",
    "operator_batch_rows",
    "operator_row_bytes",
    "brief_repr",
    "MAX_ARCSEC",
    "MAX_PIXEL_SCALE",
    "MAX_SUB_SIZE",
    "MAX_SECONDS",
]

# ---------------------------------------------------------------------------------------- bounds
#: Longest wait of any kind (task deadline, cluster start): 7 days, longer than any batch walltime.
MAX_SECONDS = 7 * 86400
#: Largest radius or centre coordinate (arcsec): ~28 degrees, far beyond any lens cutout.
MAX_ARCSEC = 100_000
#: Largest pixel scale (arcsec per pixel): one degree.
MAX_PIXEL_SCALE = 3600
#: Largest over-sampling size (sub-pixels per axis). The sub-grids hold size² points per pixel
#: (32 -> 1024 per pixel: ~160 MB of float64 (y, x) coordinates for a 100x100 mask); larger sizes
#: only exhaust memory.
MAX_SUB_SIZE = 32
#: Largest number of aliases (``*name``) in a YAML config file.
MAX_YAML_ALIASES = 100
#: Largest number of YAML nodes a config file may expand to once its aliases are followed.
MAX_YAML_NODES = 100_000
#: Largest config file (bytes): a config is a page of text.
MAX_CONFIG_BYTES = 4 * 2**20
#: Largest magnitude of a number given to dask-jobqueue or fsspec as an option (1 PB in bytes).
MAX_OPTION_NUMBER = 1e15
#: At most this many characters of a value in an error message.
MAX_REPR = 200
#: At most this many keys listed in one error message.
MAX_ERROR_LINES = 25


class _BriefRepr(reprlib.Repr):
    """``reprlib`` with longer strings, and integers of any size (``repr`` of an integer with
    more than 4300 digits raises ``ValueError`` since Python 3.11)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlong = 40
        self.maxlist = self.maxtuple = self.maxset = 8
        self.maxdict = 6
        self.maxlevel = 3

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            digits = int(x.bit_length() * math.log10(2)) + 1
            return f"<{'-' if x < 0 else ''}integer of about {digits} digits>"
        return super().repr_int(x, level)

    def repr_bool(self, x, level):
        return repr(x)


_REPR = _BriefRepr()


def brief_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` shortened for error messages: long strings, lists and mappings are
    elided with ``...``, huge integers summarised, and the whole is at most ``limit``
    characters (a value built from YAML aliases is never expanded in full)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the config error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _integral(value: Any) -> Any:
    """Integral floats beyond int64 (``1e23``, ``1e308``) become ints, so that the field's bound
    refuses them with its own message instead of pydantic's "unable to parse" one."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        if abs(value) >= 2**63:
            return int(value)
    return value


#: An integer field: huge integral floats reach the bound check (see :func:`_integral`).
Int = Annotated[int, BeforeValidator(_integral)]
#: A coordinate in arcsec (mask centres).
Coordinate = Annotated[float, Field(ge=-MAX_ARCSEC, le=MAX_ARCSEC)]
Centre = tuple[Coordinate, Coordinate]
HduIndex = Annotated[Int, Field(ge=0, le=9999)]
SubSize = Annotated[Int, Field(ge=1, le=MAX_SUB_SIZE)]


def _sub_size(what: str) -> str:
    return f"{what} (at most {MAX_SUB_SIZE}: a sub-grid holds size² points per pixel)."


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
    data_hdu: HduIndex | str = 0
    noise_map_hdu: HduIndex | str = 0
    psf_hdu: HduIndex | str = 0
    mask_hdu: HduIndex | str = 0


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
    radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    centre: Centre = (0.0, 0.0)


class AnnularMask(_Model):
    kind: Literal["annular"] = "annular"
    inner_radius: float = Field(ge=0, le=MAX_ARCSEC, description="arcsec")
    outer_radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    centre: Centre = (0.0, 0.0)

    @model_validator(mode="after")
    def _ordered(self) -> AnnularMask:
        if self.inner_radius >= self.outer_radius:
            raise ValueError("inner_radius must be smaller than outer_radius")
        return self


class EllipticalMask(_Model):
    kind: Literal["elliptical"] = "elliptical"
    major_axis_radius: float = Field(gt=0, le=MAX_ARCSEC, description="arcsec")
    axis_ratio: float = Field(gt=0, le=1)
    angle: float = Field(
        0.0, ge=-360, le=360, description="Degrees counter-clockwise from +x (one turn either way)."
    )
    centre: Centre = (0.0, 0.0)


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
    lp: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the light-profile grid"),
    )
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )


class RadialOverSampling(_Model):
    """Sizes by distance to the mask centre: ``sub_size_list[i]`` inside ``radial_list[i]``."""

    kind: Literal["radial"] = "radial"
    sub_size_list: list[SubSize] = Field(
        min_length=1,
        description=_sub_size("Sub-pixels per axis, innermost ring first"),
    )
    radial_list: list[Annotated[float, Field(ge=0, le=MAX_ARCSEC)]] = Field(min_length=0)
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )

    @model_validator(mode="after")
    def _lengths(self) -> RadialOverSampling:
        if len(self.radial_list) != len(self.sub_size_list) - 1:
            raise ValueError("radial_list needs exactly one entry fewer than sub_size_list")
        return self


class AdaptiveOverSampling(_Model):
    """Sizes by signal-to-noise: ``sub_size_upper`` where S/N > cut, else ``sub_size_lower``."""

    kind: Literal["adaptive"] = "adaptive"
    signal_to_noise_cut: float = Field(5.0, gt=0, le=10**12)
    sub_size_lower: SubSize = Field(
        2,
        description=_sub_size("Sub-pixels per axis at or below the cut"),
    )
    sub_size_upper: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis above the cut"),
    )
    pixelization: SubSize = Field(
        4,
        description=_sub_size("Sub-pixels per axis of the pixelization grid"),
    )


OverSamplingConfig = Annotated[
    UniformOverSampling | RadialOverSampling | AdaptiveOverSampling, Field(discriminator="kind")
]


# ---------------------------------------------------------------------------------------- operator
class OperatorConfig(_Model):
    """The sparse operator: backend, rows per task, storage."""

    backend: Literal["numpy", "numba", "jax"] = "numpy"
    batch_size: Annotated[Int, Field(ge=1, le=1_048_576)] | Literal["auto"] = Field(
        "auto",
        description="Most rows (unmasked pixels) per operator task and Zarr chunk, or 'auto': as "
        "many as fit in memory_budget_mb (see operator_batch_rows). A dataset of N pixels gets "
        "ceil(N / batch_size) tasks of equal rows (balanced_batch_rows). At most 2**20 rows.",
    )
    memory_budget_mb: float | None = Field(
        None,
        gt=0,
        le=1_048_576,
        description="Memory for one operator task when batch_size is 'auto' (MiB, at most "
        "1048576 = 1 TiB). Default: a quarter of cluster.memory_limit for a local cluster with an "
        "explicit limit, else 512.",
    )
    dtype: Literal["float64", "float32"] = Field(
        "float64",
        description="Stored operator values (always computed in float64). float32 needs noise "
        "with about 1e-19 <= sigma <= 1e15 (normalised PSF), otherwise the dataset fails naming "
        "the rescaling; see docs/operator.md, 'Range and float32 storage'.",
    )
    codec: Literal["lz4", "zstd", "none"] = "lz4"
    level: Int = Field(1, ge=0, le=22, description="lz4 0-9, zstd 0-22")
    keep_bits: Int | None = Field(None, ge=1, le=52, description="Mantissa bits kept (lossy).")
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
    store: str = Field(
        description="Local path or fsspec URL (s3://bucket/survey.zarr). Never empty, `.`, the "
        "config file's folder or a folder above it: a store is a folder of its own."
    )
    storage_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(
                "the store location is empty: give a folder of its own, e.g. survey.zarr"
            )
        if "://" in value:
            if not value.split("://", 1)[1].strip("/ "):
                raise ValueError(
                    "the store URL has no path: give one, e.g. s3://bucket/survey.zarr"
                )
            return value
        # the early, clear form of what the store itself refuses (pipeline.io.store)
        base = Path((info.context or {}).get("base_dir", ".")).expanduser()
        path = Path(value).expanduser()
        where = (path if path.is_absolute() else base / path).resolve()
        folder, cwd = base.resolve(), Path.cwd().resolve()
        if where == folder:
            what = "the config file's folder"
        elif where in folder.parents:
            what = "a folder above the config file"
        elif where == cwd:
            what = "the current directory"
        else:
            return value
        raise ValueError(
            f"the store resolves to {what} ({brief_repr(str(where))}): the store would mix its "
            "files with yours (and rewrite them); give it a folder of its own, e.g. "
            "output.store: survey.zarr"
        )

    @field_validator("storage_options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_option_numbers(value)
        return value


def _check_option_numbers(options: dict[str, Any]) -> None:
    """Numbers among the options handed to another library: finite and at most 1e15."""
    for key, item in options.items():
        if isinstance(item, int | float) and not isinstance(item, bool):
            if not (math.isfinite(item) and abs(item) <= MAX_OPTION_NUMBER):
                raise ValueError(
                    f"option {brief_repr(key)} is {brief_repr(item)}: numbers here must be finite "
                    f"and at most {MAX_OPTION_NUMBER:g} in magnitude"
                )


# ---------------------------------------------------------------------------------------- cluster
class TlsFiles(_Model):
    """TLS credentials in files (PEM), for a scheduler lenspipe does not start itself (``kind:
    address``) or one whose workers start in batch jobs (``kind: slurm``/``pbs``): every process
    of the cluster presents a certificate signed by ``ca_file`` and refuses peers that do not.
    Relative paths are resolved against the config file's folder."""

    ca_file: Path = Field(description="The certificate authority (PEM) that signed every cert.")
    cert: Path = Field(description="This cluster's certificate (PEM), used by every role.")
    key: Path | None = Field(
        None, description="The certificate's private key (PEM), unless `cert` also holds it."
    )

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _resolve(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        if value is None or base is None:
            return value
        value = value.expanduser()
        return value if value.is_absolute() else Path(base) / value


SecuritySetting = Literal["none", "tls"] | TlsFiles


def _start_timeout(default: float) -> Any:
    return Field(
        default,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds the run waits with no worker alive (at the start, or after losing "
        "them all) before it ends with a message and exit code 1. At most 7 days.",
    )


class LocalClusterConfig(_Model):
    """An embedded ``distributed.LocalCluster``: worker processes, one thread each. The
    scheduler, the workers and the dashboard listen on 127.0.0.1 only."""

    kind: Literal["local"] = "local"
    n_workers: Int | None = Field(
        None, ge=1, le=1024, description="Default: one per core (at most 1024)."
    )
    memory_limit: str = Field(
        "auto", description="Per worker, e.g. '4GiB' (at most 1 PiB); auto = a share of memory."
    )
    dashboard: bool = Field(
        False,
        description="Serve the Dask dashboard on 127.0.0.1 (a free port) and print its address; "
        "false: no dashboard server at all. See docs/clusters.md for an ssh tunnel.",
    )
    security: Literal["none", "tls"] | TlsFiles = Field(
        "none",
        description="`tls`: the scheduler, workers and client talk TLS with temporary credentials "
        "made for this run, and refuse any other process (other users of a shared machine).",
    )
    start_timeout: float = _start_timeout(600.0)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, value: str) -> str:
        if value.strip().lower() == "auto":
            return "auto"
        from dask.utils import parse_bytes

        try:
            if not any(c.isdigit() for c in value):
                raise ValueError(value)  # dask reads "" or "GiB" as 1 byte or 1 GiB
            size = parse_bytes(value)
        except (ValueError, TypeError, OverflowError):
            raise ValueError("must be auto or a size such as 4GiB, 500MB or 2e9 (bytes)") from None
        if not 0 < size <= 2**50:
            raise ValueError("must be auto or a size between 1 byte and 1 PiB, such as 4GiB")
        return value

    @field_validator("security")
    @classmethod
    def _local_security(cls, value):
        if isinstance(value, TlsFiles):
            raise ValueError(
                "certificate files are for kind: address, slurm or pbs; the embedded cluster "
                "makes its own: use security: tls"
            )
        return value


def _no_temporary_tls(value, kind: str):
    if value == "tls":
        raise ValueError(
            f"`tls` (temporary credentials) only works for the embedded cluster (kind: local); "
            f"for kind: {kind} give the files every process uses: security: "
            "{ca_file: ca.pem, cert: cluster.pem, key: cluster.key}"
        )
    return value


class AddressCluster(_Model):
    """Join an existing scheduler."""

    kind: Literal["address"] = "address"
    address: str = Field(description="e.g. tcp://10.0.0.5:8786 (tls://... with security files)")
    timeout: float = Field(
        30.0, gt=0, le=3600, description="Seconds to wait for the scheduler (at most 3600)."
    )
    security: SecuritySetting = Field(
        "none",
        description="`none`, or TLS files `{ca_file, cert, key}` matching the scheduler's "
        "(see docs/clusters.md).",
    )
    start_timeout: float = _start_timeout(600.0)

    @field_validator("security")
    @classmethod
    def _security(cls, value):
        return _no_temporary_tls(value, "address")

    @model_validator(mode="after")
    def _protocol(self) -> AddressCluster:
        tls = self.address.strip().lower().startswith("tls://")
        if isinstance(self.security, TlsFiles) and not tls:
            raise ValueError(
                "security files need a TLS scheduler: write the address as tls://host:port"
            )
        if tls and self.security == "none":
            raise ValueError(
                "a tls:// address needs credentials: add security: {ca_file: ..., cert: ..., "
                "key: ...} (see docs/clusters.md)"
            )
        return self


class JobqueueCluster(_Model):
    """SLURM or PBS via dask-jobqueue; ``options`` are passed to SLURMCluster/PBSCluster."""

    kind: Literal["slurm", "pbs"]
    jobs: Int = Field(
        1,
        ge=1,
        le=10_000,
        description="Number of batch jobs to start (cluster.scale(jobs=...)); at most 10000.",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    security: SecuritySetting = Field(
        "none",
        description="`none`, or TLS files `{ca_file, cert, key}` on a file system every node "
        "reads: the scheduler, the workers and the driver all use them (see docs/clusters.md).",
    )
    start_timeout: float = _start_timeout(3600.0)

    @field_validator("security")
    @classmethod
    def _security(cls, value):
        return _no_temporary_tls(value, "slurm or pbs")

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in ("security", "protocol"):
            if key in value:
                raise ValueError(
                    f"option {key!r} is set by lenspipe from cluster.security: remove it and "
                    "use cluster.security"
                )
        for key in ("cores", "processes"):
            if key in value:
                item = value[key]
                if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1024:
                    raise ValueError(
                        f"option {key!r} must be an integer from 1 to 1024 (got {brief_repr(item)})"
                    )
        _check_option_numbers(value)
        return value


ClusterConfig = Annotated[
    LocalClusterConfig | AddressCluster | JobqueueCluster, Field(discriminator="kind")
]


class RunConfig(_Model):
    retries: Int = Field(
        2, ge=0, le=100, description="Retries of a failed task (worker loss counts); at most 100."
    )
    max_tasks_in_flight: Int = Field(
        64, ge=1, le=100_000, description="Bound on submitted, unfinished tasks (at most 100000)."
    )
    task_timeout: float = Field(
        3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds one task may run before the driver fails it (and retries it while "
        "`retries` allow): a stopped or stuck worker never holds the run. At most 7 days.",
    )
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
    pixel_scales: float | tuple[float, float] | Literal["header"] = Field(
        description="Arcsec per pixel: a number, a pair `[sy, sx]`, or `header` to read each "
        "file's `PIXSCAY`/`PIXSCAX` cards or its WCS. A manifest's `pixel_scale` column overrides "
        "it. Positive, at most 3600 (one degree)."
    )
    mask: MaskConfig
    over_sampling: OverSamplingConfig = Field(default_factory=UniformOverSampling)
    sparse_operator: OperatorConfig = Field(default_factory=OperatorConfig)
    output: OutputConfig
    cluster: ClusterConfig = Field(default_factory=LocalClusterConfig)
    run: RunConfig = Field(
        default_factory=RunConfig,
        description="Retries, tasks in flight and their deadline, progress bars.",
    )
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
            if not all(v <= MAX_PIXEL_SCALE for v in values):
                raise ValueError(
                    f"pixel scales must be at most {MAX_PIXEL_SCALE:g} arcsec per pixel (one "
                    "degree)"
                )
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
        return Config.model_validate(
            {**data, "base_dir": Path(base_dir)}, context={"base_dir": Path(base_dir)}
        )
    except ValidationError as err:
        raise ConfigError(_explain(err, data)) from None


class _AliasBomb(Exception):
    pass


class _CountingLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses more than :data:`MAX_YAML_ALIASES` aliases while it
    composes the document (before any value is built)."""

    def __init__(self, stream) -> None:
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_YAML_ALIASES:
                raise _AliasBomb(
                    f"uses more than {MAX_YAML_ALIASES} YAML aliases (limit {MAX_YAML_ALIASES})"
                )
        return super().compose_node(parent, index)


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document once every alias is followed, counted without following them
    (each node once, memoised): stops as soon as the count passes :data:`MAX_YAML_NODES`, and
    refuses a node that contains itself."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]

    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if isinstance(node, yaml.MappingNode):
            return [item for pair in node.value for item in pair]
        return []

    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size = 1 + sum(sizes[id(child)] for child in children(node))
            if size > MAX_YAML_NODES:
                return size
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _AliasBomb("has a YAML alias inside the node it refers to (a recursive value)")
        on_path.add(key)
        stack.append((node, True))
        for child in children(node):
            if id(child) in on_path:
                raise _AliasBomb(
                    "has a YAML alias inside the node it refers to (a recursive value)"
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs before building any value."""
    loader = _CountingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if loader.aliases:
            size = _expanded_size(node)
            if size > MAX_YAML_NODES:
                raise _AliasBomb(
                    f"uses {loader.aliases} YAML aliases that expand to more than "
                    f"{MAX_YAML_NODES} values (limit {MAX_YAML_NODES})"
                )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file (a regular file of at most 4 MiB)."""
    path = Path(path)
    try:
        # never open a FIFO or a device: reading one blocks for ever or never ends
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"config file '{path}' is not a regular file: give a YAML file")
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file '{path}' is {info.st_size} bytes (limit {MAX_CONFIG_BYTES}): "
                "is it the right file?"
            )
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file '{path}': {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file '{path}' is not text (UTF-8): {err.reason}") from None
    try:
        data = _parse_yaml(text)
    except _AliasBomb as err:
        raise ConfigError(
            f"config file '{path}' {err}: write the values out instead of using so many "
            "&anchors/*aliases"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from None
    except (ValueError, OverflowError) as err:
        # e.g. an integer of more than 4300 digits (Python refuses to parse it)
        raise ConfigError(f"config file '{path}' has a value YAML cannot read: {err}") from None
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
    tagged = None  # the node whose union tag was already skipped
    for part in loc:
        if isinstance(node, dict) and node.get("kind") == part and tagged is not node:
            # the tag of a discriminated union comes first; in ``cluster: {kind: address,
            # address: ...}`` the tag "address" is also a key, which only the next part can be
            tagged = node
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list | tuple) and isinstance(part, int) and 0 <= part < len(node):
            parts.append(f"[{part}]")
            node = node[part]
            continue
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
            hint = f"unknown kind {brief_repr(tag)}: use one of {expected}"
        elif kind == "union_tag_not_found":
            loc += ".kind"
            kinds = _kinds(loc.split(".")[0])
            hint = "required key is missing: add it" + (f" (one of {kinds})" if kinds else "")
        elif isinstance(value, dict):
            hint = msg  # a check of a whole section: the message names its keys
        else:
            hint = f"{msg} (got {brief_repr(value)})"
        found.setdefault(loc, [])
        if hint not in found[loc]:
            found[loc].append(hint)
    lines = [f"  {loc}: {'; or '.join(hints)}" for loc, hints in found.items()]
    if len(lines) > MAX_ERROR_LINES:
        more = len(lines) - MAX_ERROR_LINES
        lines = [*lines[:MAX_ERROR_LINES], f"  ... and {more} more keys with errors"]
    return "invalid configuration:\n" + "\n".join(lines)
