"""Config models of how a run computes and where it writes: the sparse operator
(``sparse_operator``), the store (``output``) and the run's own settings (``run``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.exc import StoreError
from pipeline.flow.config.base import (
    MAX_SECONDS,
    Int,
    _check_option_numbers,
    _Model,
    brief_repr,
)

__all__ = ["OperatorConfig", "OutputConfig", "RunConfig"]

if TYPE_CHECKING:
    from pipeline.io.store import OperatorStorage


# ---------------------------------------------------------------------------------------- operator
class OperatorConfig(_Model):
    """The sparse operator: backend, rows per task, storage."""

    backend: Literal["numpy", "numba", "jax"] = "numpy"
    batch_size: Annotated[Int, Field(ge=1, le=1_048_576)] | Literal["auto"] = Field(
        "auto",
        description="Most rows (unmasked pixels) per operator task and Zarr chunk, or 'auto': as "
        "many as fit in memory_budget_mb (see operator_batch_rows). A dataset of N pixels gets "
        "ceil(N / batch_size) tasks of equal rows (BatchGeometry.balanced). At most 2**20 rows.",
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
        # caught here, not when the first operator batch fails to write; the rules live with
        # the storage settings themselves (pipeline.io.store.OperatorStorage)
        try:
            self.storage()
        except StoreError as err:
            raise ValueError(str(err)) from None
        return self

    def storage(self) -> OperatorStorage:
        """The store's encoding of these settings (validated there)."""
        from pipeline.io.store import OperatorStorage

        return OperatorStorage(self.dtype, self.codec, self.level, self.keep_bits, self.shuffle)


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


class RunConfig(_Model):
    retries: Int = Field(
        2, ge=0, le=100, description="Retries of a failed task (worker loss counts); at most 100."
    )
    max_tasks_in_flight: Int = Field(
        64, ge=1, le=100_000, description="Bound on submitted, unfinished tasks (at most 100000)."
    )
    datasets_per_task: Annotated[Int, Field(ge=1, le=10_000)] | Literal["auto"] = Field(
        "auto",
        description="Datasets one prepare task takes: auto (tasks of about 0.5 s, from the "
        "datasets finished so far, at most 16) or at most this many; fewer near the end of a "
        "run, so every worker keeps busy. One Dask task costs a few ms of CPU: small datasets go "
        "in groups. A group whose task fails or times out runs again one dataset per task.",
    )
    task_timeout: float = Field(
        3600.0,
        gt=0,
        le=MAX_SECONDS,
        description="Seconds one task may run before the driver fails it (and retries it while "
        "`retries` allow): a stopped or stuck worker never holds the run; a prepare task of "
        "several datasets has this per dataset. At most 7 days.",
    )
    progress: bool = True
    verify: bool = Field(
        False,
        description="Also decode every operator chunk of complete datasets and recompute damaged "
        "batches (reads the whole store; by default only resumed datasets are checked).",
    )
    performance_report: str | None = Field(None, description="Write a Dask HTML report here.")
