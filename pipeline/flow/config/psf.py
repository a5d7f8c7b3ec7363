"""Config model of how each dataset's PSF is prepared (``psf``): trimming to a smaller box."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator

from pipeline.flow.config.base import Int, _Model

__all__ = ["PsfConfig"]

#: Largest trimmed PSF side (pixels): larger kernels are not trimmed, they are kept.
MAX_TRIM_SIDE = 4095
Side = Annotated[Int, Field(ge=1, le=MAX_TRIM_SIDE)]


class PsfConfig(_Model):
    """The PSF as each dataset's operator uses it. By default the kernel is used whole."""

    trim_to: tuple[Side, Side] | None = Field(
        None,
        description="Keep the central [ky, kx] pixels of every PSF (both odd; an axis already "
        "smaller is kept whole), then normalise as any kernel. W's size per pixel goes with "
        "(2 ky - 1)(2 kx - 1): a 49x49 PSF trimmed to 21x21 makes the operator 5.6x smaller.",
    )
    trim_fraction: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Trim every PSF to the smallest odd box around its centre holding this "
        "fraction of sum |K| (e.g. 0.999), per dataset. Exclusive with trim_to.",
    )

    @field_validator("trim_to")
    @classmethod
    def _odd_pair(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and any(v % 2 == 0 for v in value):
            raise ValueError(f"must be two odd numbers [ky, kx], got {list(value)}")
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> PsfConfig:
        if self.trim_to is not None and self.trim_fraction is not None:
            raise ValueError("give trim_to or trim_fraction, not both")
        return self

    @property
    def trims(self) -> bool:
        return self.trim_to is not None or self.trim_fraction is not None
