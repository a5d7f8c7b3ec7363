"""The survey configuration: pydantic models of the YAML file (DESIGN §6).

Unknown keys are errors; every error names the key path and says how to fix it. Relative paths
are resolved against the folder of the config file. :func:`load_config` is the one entry point.

Every number has an upper bound (a value like ``1e23`` or ``1e308`` is a typo, and once accepted
it made runs wait for ever); error messages show at most ~200 characters of a value; a YAML file
whose aliases expand beyond :data:`MAX_YAML_NODES` nodes ("billion laughs") is refused before it is
turned into Python objects.

Modules: :mod:`.base` (bounds, base model, :func:`brief_repr`), :mod:`.inputs` (inputs, mask,
over-sampling), :mod:`.operator` (sparse operator, output, run), :mod:`.cluster`,
:mod:`.survey` (:class:`Config`), :mod:`.loading` (YAML, validation, error messages).
"""

from pipeline.flow.config.base import (
    MAX_ARCSEC,
    MAX_PIXEL_SCALE,
    MAX_SECONDS,
    MAX_SUB_SIZE,
    MAX_YAML_ALIASES,
    MAX_YAML_NODES,
    brief_repr,
)
from pipeline.flow.config.cluster import (
    AdaptJobs,
    AddressCluster,
    ClusterConfig,
    JobqueueCluster,
    LocalClusterConfig,
    TlsFiles,
)
from pipeline.flow.config.inputs import (
    AdaptiveOverSampling,
    AnnularMask,
    CircularMask,
    CombinedMask,
    EllipticalMask,
    FileMask,
    FlagsMask,
    FoldersInput,
    ManifestInput,
    MaskConfig,
    MaskMember,
    MefBand,
    MefInput,
    OverSamplingConfig,
    RadialOverSampling,
    UniformOverSampling,
)
from pipeline.flow.config.loading import config_from_dict, load_config
from pipeline.flow.config.operator import OperatorConfig, OutputConfig, RunConfig
from pipeline.flow.config.psf import PsfConfig
from pipeline.flow.config.survey import Config

__all__ = [
    "MAX_ARCSEC",
    "MAX_PIXEL_SCALE",
    "MAX_SECONDS",
    "MAX_SUB_SIZE",
    "MAX_YAML_ALIASES",
    "MAX_YAML_NODES",
    "AdaptJobs",
    "AdaptiveOverSampling",
    "AddressCluster",
    "AnnularMask",
    "CircularMask",
    "ClusterConfig",
    "Config",
    "CombinedMask",
    "EllipticalMask",
    "FileMask",
    "FlagsMask",
    "FoldersInput",
    "JobqueueCluster",
    "LocalClusterConfig",
    "ManifestInput",
    "MaskConfig",
    "MaskMember",
    "MefBand",
    "MefInput",
    "OperatorConfig",
    "OutputConfig",
    "OverSamplingConfig",
    "PsfConfig",
    "RadialOverSampling",
    "RunConfig",
    "TlsFiles",
    "UniformOverSampling",
    "brief_repr",
    "config_from_dict",
    "load_config",
]
