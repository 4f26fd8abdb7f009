"""Persona vectors: contrastive extraction, projections and data screening.

``PersonaVector`` holds one direction per layer (site ``blocks.{l}.hook_resid_post``); extract one from a
trait's contrastive system prompts (``extract_from_trait``) or from answer pairs (``extract_from_pairs``),
project activations onto it (``project``, ``answer_projections``, ``token_projections``) and screen
fine-tuning data with it (``screen_dataset``). See ``docs/persona_vectors.md``.

The EM training monitor is the subpackage ``probes.monitor`` (not imported here: importing it registers the
``monitor`` training plugin; ``docs/monitor.md``).
"""

from ._activations import teacher_forced_stats
from ._extract import ExtractionResult, extract_from_pairs, extract_from_trait
from ._project import answer_projections, project, token_projections
from ._screen import ScreenResult, screen_dataset, write_screen_report
from ._vector import (
    PersonaVector,
    export_gguf,
    import_gguf,
    import_pt,
    is_gguf_file,
    load_vectors,
    save_vectors,
)

__all__ = [
    "ExtractionResult",
    "PersonaVector",
    "ScreenResult",
    "answer_projections",
    "export_gguf",
    "extract_from_pairs",
    "extract_from_trait",
    "import_gguf",
    "is_gguf_file",
    "import_pt",
    "load_vectors",
    "project",
    "save_vectors",
    "screen_dataset",
    "teacher_forced_stats",
    "token_projections",
    "write_screen_report",
]
