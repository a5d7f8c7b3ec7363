"""The survey config as a whole (:class:`Config`): every section, the pixel scales, paths
resolved against the config file's folder, and the settings recorded (and hashed) with each
dataset."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipeline.flow.config.base import MAX_PIXEL_SCALE, _Model
from pipeline.flow.config.cluster import ClusterConfig, LocalClusterConfig
from pipeline.flow.config.inputs import Inputs, MaskConfig, OverSamplingConfig, UniformOverSampling
from pipeline.flow.config.operator import OperatorConfig, OutputConfig, RunConfig
from pipeline.flow.config.psf import PsfConfig
from pipeline.operators.batching import task_memory_budget

__all__ = ["Config"]


class Config(_Model):
    """A survey run."""

    inputs: Inputs
    pixel_scales: float | tuple[float, float] | Literal["header"] = Field(
        description="Arcsec per pixel: a number, a pair `[sy, sx]`, or `header` to read each "
        "data file's `PIXSCAY`/`PIXSCAX` cards, else its WCS, else its `PIXSCALE` card. A "
        "manifest's `pixel_scale` column and a folder's `pixel_scales_file` override it. "
        "Positive, at most 3600 (one degree)."
    )
    pixel_scales_check: Literal["warn", "strict"] = Field(
        "warn",
        description="What `lenspipe validate` and `run --dry-run` do when an explicit pixel scale "
        "(the number or pair above, a manifest's `pixel_scale`, a folder's `pixel_scales_file`) "
        "differs by more than 1% from the one in the data file's header: `warn`, or `strict` "
        "(an error: exit 2; and at run time the dataset fails, naming both scales). Headers "
        "without a pixel scale are not compared. Not a dataset setting (changing it recomputes "
        "nothing).",
    )
    mask: MaskConfig
    over_sampling: OverSamplingConfig = Field(default_factory=UniformOverSampling)
    psf: PsfConfig = Field(
        default_factory=PsfConfig,
        description="How each PSF is used: whole (default) or trimmed to a smaller box.",
    )
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
            # bad_pixels only when not the default: older stores keep their settings hash
            "mask": self.mask.model_dump(
                mode="json", exclude={"bad_pixels"} if self.mask.bad_pixels == "fail" else None
            ),
            "over_sampling": self.over_sampling.model_dump(mode="json"),
            # the budget only groups rows into tasks (each dataset stores its batch size): not
            # a setting of the result, and leaving it out keeps older stores' hashes valid
            "sparse_operator": self.sparse_operator.model_dump(
                mode="json", exclude={"memory_budget_mb"}
            ),
            # only when set: stores made without the psf section keep their settings hash
            **({"psf": self.psf.model_dump(mode="json")} if self.psf.trims else {}),
        }

    def operator_memory_budget(self) -> int:
        """Bytes one operator task may use when ``sparse_operator.batch_size`` is ``'auto'``
        (:func:`~pipeline.operators.batching.task_memory_budget` of ``memory_budget_mb`` and an
        explicit local ``cluster.memory_limit``)."""
        worker_memory: int | None = None
        cluster = self.cluster
        if isinstance(cluster, LocalClusterConfig) and cluster.memory_limit not in ("auto", ""):
            from dask.utils import parse_bytes

            try:
                worker_memory = parse_bytes(cluster.memory_limit)
            except ValueError:
                worker_memory = None
        return task_memory_budget(self.sparse_operator.memory_budget_mb, worker_memory)
