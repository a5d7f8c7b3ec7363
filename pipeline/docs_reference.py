"""The configuration reference (``docs/configuration.md``), generated from the pydantic models of
:mod:`pipeline.flow.config` so that it cannot drift from what ``lenspipe validate`` accepts.

Regenerate after changing a model::

    python -m pipeline.docs_reference > docs/configuration.md

``tests/test_docs.py`` regenerates it and compares it with the committed file.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = ["configuration_reference"]

# Used only where a field has no ``description`` of its own in pipeline/flow/config/: the
# model's description wins as soon as it has one.
_NOTES: dict[str, str] = {
    "Config.inputs": "Where the datasets come from; `kind` selects the layout.",
    "Config.pixel_scales": (
        "Arcsec per pixel: a number, a pair `[sy, sx]`, or `header` to read each data file's "
        "`PIXSCAY`/`PIXSCAX` cards, else its WCS, else its `PIXSCALE` card. A manifest's "
        "`pixel_scale` column and a folder's `pixel_scales_file` override it."
    ),
    "Config.mask": "The mask applied to every dataset (True = masked); `kind` selects its shape.",
    "Config.over_sampling": "Sub-pixels per axis of the light-profile and pixelization grids.",
    "Config.sparse_operator": "The operator W = Hᵀ N⁻¹ H: backend, rows per task and storage.",
    "Config.output": "The Zarr store that receives every dataset.",
    "Config.cluster": "Where the tasks run; `kind` selects the cluster.",
    "Config.run": "Retries, tasks in flight, progress bars.",
    "FoldersInput.kind": "Selects this layout.",
    "FoldersInput.data_hdu": "HDU of the image: index or EXTNAME.",
    "FoldersInput.noise_map_hdu": "HDU of the noise map: index or EXTNAME.",
    "FoldersInput.psf_hdu": "HDU of the PSF: index or EXTNAME.",
    "FoldersInput.mask_hdu": "HDU of the mask: index or EXTNAME.",
    "FoldersInput.flags_hdu": "HDU of the flag map: index or EXTNAME.",
    "ManifestInput.kind": "Selects this layout.",
    "MefInput.kind": "Selects this layout.",
    "MefInput.root": "Folder of the multi-extension FITS files.",
    "MefInput.pattern": "Glob of the files under root.",
    "MefInput.bands": (
        "Band name → its HDUs (see the next section); each file gives one dataset per band."
    ),
    "MefBand.data": "EXTNAME of the image.",
    "MefBand.noise_map": "EXTNAME of the noise map (RMS).",
    "MefBand.psf": "EXTNAME of the PSF.",
    "MefBand.mask": (
        "EXTNAME of a mask (non-zero = masked), for a `file` mask or `mask.combine` member."
    ),
    "CircularMask.kind": "Unmasked where the distance to `centre` is less than `radius`.",
    "CircularMask.centre": "`[y, x]` arcsec, y up. The manifest's mask_centre_y/x override it.",
    "AnnularMask.kind": "Unmasked between `inner_radius` and `outer_radius` from `centre`.",
    "AnnularMask.centre": "`[y, x]` arcsec, y up. The manifest's mask_centre_y/x override it.",
    "EllipticalMask.kind": "Unmasked inside an ellipse around `centre`.",
    "EllipticalMask.axis_ratio": "Minor over major axis.",
    "EllipticalMask.centre": "`[y, x]` arcsec, y up. The manifest's mask_centre_y/x override it.",
    "FileMask.kind": "Each dataset's own mask file.",
    "FlagsMask.kind": "Each dataset's flag map under a bit mask.",
    "CombinedMask.kind": (
        "The union of the members' masked pixels; may be left out when `combine` is given."
    ),
    "UniformOverSampling.kind": "The same size at every pixel.",
    "UniformOverSampling.lp": "Sub-pixels per axis of the light-profile grid.",
    "UniformOverSampling.pixelization": "Sub-pixels per axis of the pixelization grid.",
    "RadialOverSampling.kind": "Sizes by distance to the mask centre.",
    "RadialOverSampling.sub_size_list": "Sub-pixels per axis, innermost ring first.",
    "RadialOverSampling.radial_list": "Outer radius (arcsec) of each ring but the last.",
    "RadialOverSampling.pixelization": "Sub-pixels per axis of the pixelization grid.",
    "AdaptiveOverSampling.kind": "Sizes by signal-to-noise.",
    "AdaptiveOverSampling.signal_to_noise_cut": (
        "S/N above which a pixel gets `sub_size_upper` (lowered to half the peak S/N when the "
        "peak is below twice the cut)."
    ),
    "AdaptiveOverSampling.sub_size_lower": "Sub-pixels per axis at or below the cut.",
    "AdaptiveOverSampling.sub_size_upper": "Sub-pixels per axis above the cut.",
    "AdaptiveOverSampling.pixelization": "Sub-pixels per axis of the pixelization grid.",
    "OperatorConfig.backend": (
        "numpy (BLAS, fastest on CPU), numba or jax; all agree to ~1e-15 of max |W|."
    ),
    "OperatorConfig.codec": "lz4 (Blosc LZ4), zstd or none; see docs/store-schema.md.",
    "OutputConfig.storage_options": "Passed to fsspec (s3fs: endpoint_url, client_kwargs, ...).",
    "LocalClusterConfig.kind": "An embedded LocalCluster on this machine.",
    "AddressCluster.kind": "A running scheduler.",
    "JobqueueCluster.kind": "SLURM or PBS batch jobs.",
    "JobqueueCluster.options": (
        "Keyword arguments of `dask_jobqueue.SLURMCluster` / `PBSCluster` (cores, memory, "
        "queue, walltime, account, ...). `lenspipe run --dry-run` prints the job script."
    ),
    "RunConfig.progress": "Progress bars (datasets, operator batches) on stderr.",
}

_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"),
)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _constraints(metadata: list) -> list[str]:
    out = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _constraints(item.metadata)
        for cls, attribute, symbol in _BOUNDS:
            if isinstance(item, cls):
                out.append(f"{symbol} {getattr(item, attribute)}")
        if isinstance(item, annotated_types.MinLen) and item.min_length > 0:
            out.append(f"at least {item.min_length} item{'s' if item.min_length > 1 else ''}")
    return out


def _type_name(annotation: Any) -> str:
    """YAML-flavoured name of a field's type; models link to their section."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        inner = _type_name(args[0])
        limits = _constraints(list(args[1:]))
        return f"{inner} ({', '.join(limits)})" if limits else inner
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a) for a in args) + "]"
    if origin is dict:
        value = _type_name(args[1])
        return f"mapping of {_type_name(args[0])} to {value}" if value != "any" else "mapping"
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if _is_model(annotation):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    if annotation is Path:
        return "path"
    return getattr(annotation, "__name__", str(annotation))


def _default(field) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel):
        kind = getattr(value, "kind", None)
        return f"`kind: {kind}`" if kind else "all defaults"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if _is_model(annotation):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _kinds(model: type[BaseModel]) -> list[str]:
    field = model.model_fields.get("kind")
    return [] if field is None else [str(k) for k in typing.get_args(field.annotation)]


def _doc(model: type[BaseModel]) -> str:
    # a class's own docstring only (the base models' docstrings are pydantic's)
    text = model.__dict__.get("__doc__") or ""
    text = inspect.cleandoc(text)
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(model: type[BaseModel], key: str) -> list[str]:
    kinds = _kinds(model)
    heading = f"`{key}`" if key else "Top level"
    if kinds:
        heading += " with " + " or ".join(f"`kind: {k}`" for k in kinds)
    lines = [f'<a id="{_anchor(model)}"></a>', "", f"## {heading}", ""]
    doc = _doc(model)
    lines += [f"{doc} (`{model.__name__}`)" if doc else f"(`{model.__name__}`)", ""]
    lines += ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        kind = _type_name(field.annotation)
        limits = _constraints(field.metadata)
        if limits:
            kind += f" ({', '.join(limits)})"
        description = field.description or _NOTES.get(f"{model.__name__}.{name}", "")
        lines.append(f"| `{name}` | {kind} | {_default(field)} | {_escape(description.strip())} |")
    return [*lines, ""]


def configuration_reference() -> str:
    """Markdown reference of every section and key of the YAML configuration, from the pydantic
    models of :mod:`pipeline.flow.config` (types, defaults, limits and descriptions)."""
    from pipeline.flow.config import Config

    order: list[tuple[type[BaseModel], str]] = []
    seen: set[type[BaseModel]] = set()

    def visit(model: type[BaseModel], key: str) -> None:
        if model in seen:
            return
        seen.add(model)
        order.append((model, key))
        for name, field in model.model_fields.items():
            child_key = name if model is Config else f"{key}.{name}"
            if typing.get_origin(field.annotation) is dict:
                child_key += ".*"
            for child in _models_in(field.annotation):
                visit(child, child_key)

    visit(Config, "")
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m pipeline.docs_reference > docs/configuration.md` from the",
        "pydantic models in pipeline/flow/config/: do not edit by hand (tests/test_docs.py",
        "compares this file with the models). -->",
        "",
        "A survey is described by one YAML file, checked by `lenspipe validate CONFIG` without",
        "running anything. Unknown keys are errors, and every error names the key path and the fix.",
        "Relative paths are resolved against the folder of the config file; `output.store` may also",
        "be an fsspec URL (`s3://bucket/survey.zarr`). Sections with a `kind` key take one of several",
        "forms: the `kind` value selects the form and the keys it accepts. Examples with every key",
        "commented: [configs/](../configs/); `lenspipe simulate` writes a ready one.",
        "",
        "Lengths are in arcsec, angles in degrees counter-clockwise from +x, coordinates `[y, x]`",
        "with y up (see [conventions.md](conventions.md)).",
        "",
        "Contents: "
        + ", ".join(
            f"[{key or 'top level'}"
            + (f" ({' or '.join(_kinds(model))})" if _kinds(model) else "")
            + f"](#{_anchor(model)})"
            for model, key in order
        ),
        "",
    ]
    for model, key in order:
        lines += _section(model, key)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(configuration_reference(), end="")
