"""Emergent-misalignment workbench: the core (models, hook sites, artifacts, chat, generation)."""

from ._artifacts import Artifact, load_artifact, save_artifact
from ._errors import MissingPackageError, WorkbenchError
from ._hooks import ActivationCache, forward_until, intervene, read_sites
from ._models import DEFAULT_MODEL, LoadedModel, ModelFingerprint, ModelLike, load_model
from ._sites import (
    ALL_SITE_KINDS,
    SITE_KINDS,
    ArchAdapter,
    ArchSpec,
    SiteMap,
    register_adapter,
    register_arch,
)
from ._version import __version__
from .runs import RunDir, find_runs
from .settings import Bounds, from_mapping, setting, to_mapping

__all__ = [
    "ALL_SITE_KINDS",
    "DEFAULT_MODEL",
    "SITE_KINDS",
    "ActivationCache",
    "ArchAdapter",
    "ArchSpec",
    "Artifact",
    "Bounds",
    "LoadedModel",
    "MissingPackageError",
    "ModelFingerprint",
    "ModelLike",
    "RunDir",
    "SiteMap",
    "WorkbenchError",
    "__version__",
    "find_runs",
    "forward_until",
    "from_mapping",
    "intervene",
    "load_model",
    "load_artifact",
    "read_sites",
    "register_adapter",
    "register_arch",
    "save_artifact",
    "setting",
    "to_mapping",
]
