"""Config models of the Dask cluster (``cluster``): the embedded ``LocalCluster``, an existing
scheduler, or SLURM/PBS through dask-jobqueue, and their TLS settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.flow.config.base import (
    MAX_SECONDS,
    Int,
    _check_option_numbers,
    _Model,
    brief_repr,
)

__all__ = [
    "AdaptJobs",
    "AddressCluster",
    "ClusterConfig",
    "JobqueueCluster",
    "LocalClusterConfig",
    "SecuritySetting",
    "TlsFiles",
]


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


MAX_JOBS = 10_000


class AdaptJobs(_Model):
    """Adaptive scaling of a SLURM/PBS cluster: between ``minimum`` and ``maximum`` batch jobs,
    following the work left (dask-jobqueue's ``cluster.adapt(minimum_jobs=..., maximum_jobs=...)``):
    more jobs while many tasks wait, idle jobs released (cancelled) as the survey's tail
    shrinks."""

    minimum: Int = Field(
        0,
        ge=0,
        le=MAX_JOBS,
        description="Jobs kept even when no task waits (0: release every idle job).",
    )
    maximum: Int = Field(
        ge=1, le=MAX_JOBS, description="Most jobs submitted at once (at least 1, at most 10000)."
    )

    @model_validator(mode="after")
    def _range(self) -> AdaptJobs:
        if self.minimum > self.maximum:
            raise ValueError(f"minimum ({self.minimum}) must be at most maximum ({self.maximum})")
        return self


class JobqueueCluster(_Model):
    """SLURM or PBS via dask-jobqueue; ``options`` are passed to SLURMCluster/PBSCluster."""

    kind: Literal["slurm", "pbs"]
    jobs: Int = Field(
        1,
        ge=1,
        le=MAX_JOBS,
        description="Number of batch jobs to start (cluster.scale(jobs=...)); at most 10000. "
        "Not with `adapt`.",
    )
    adapt: AdaptJobs | None = Field(
        None,
        description="`{minimum, maximum}` jobs: scale with the work left instead of a fixed "
        "number of `jobs` (give one or the other).",
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

    @model_validator(mode="after")
    def _jobs_or_adapt(self) -> JobqueueCluster:
        if self.adapt is not None and "jobs" in self.model_fields_set:
            raise ValueError(
                "give either jobs (a fixed number of batch jobs) or adapt (a range: "
                "{minimum, maximum}), not both"
            )
        return self

    @property
    def first_jobs(self) -> int:
        """The jobs submitted before the run starts: ``jobs``, or with ``adapt`` its minimum
        (at least one: the cluster is only started when there is work)."""
        return self.jobs if self.adapt is None else max(1, self.adapt.minimum)

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
