"""Emergent-misalignment workbench: the core (models, hook sites, artifacts, chat, generation)."""

from ._artifacts import Artifact, load_artifact, save_artifact
from ._errors import MissingPackageError, WorkbenchError
from ._hooks import ActivationCache, forward_until, intervene, read_sites
from ._models import DEFAULT_MODEL, LoadedModel, ModelFingerprint, load_model
from ._sites import SITE_KINDS, ArchAdapter, register_adapter
from ._version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "SITE_KINDS",
    "ActivationCache",
    "ArchAdapter",
    "Artifact",
    "LoadedModel",
    "MissingPackageError",
    "ModelFingerprint",
    "WorkbenchError",
    "__version__",
    "forward_until",
    "intervene",
    "load_model",
    "load_artifact",
    "read_sites",
    "register_adapter",
    "save_artifact",
]
