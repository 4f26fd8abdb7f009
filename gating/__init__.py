"""Alignment gates: learnable multiplicative gates on attention / MLP outputs, with alpha control.

``GateSet.create(lm, kind, placements, layers)`` makes identity gates (``placements``: ``attn`` and/or
``mlp``; ``sites=`` is the old name); train them with ``train_gates`` (or the
``gates`` plugin of ``workbench train``, registered by ``gating.training``); apply them with
``gates.attached(lm, alpha)`` where ``g_alpha = max(0, 1 + alpha * (g - 1))`` (1 trained, 0 off,
-1 suppress, > 1 amplify); inspect them with ``analyze_gates``; read and write the alignment-gating
reference checkpoint (``gating_params.pth``) with ``load_reference_gates`` / ``export_reference_gates``.
See ``docs/gates.md``.
"""

from . import kinds  # noqa: F401  (registers the shipped gate kinds)
from ._analysis import GateAnalysis, analyze_gates
from ._gate import GATE_KINDS, GATE_PLACEMENTS, GATE_SITES, Gate, register_gate_kind
from ._gateset import GateHandle, GateSet, gate_intervention
from ._reference import export_reference_gates, load_reference_gates
from ._train import train_gates

__all__ = [
    "GATE_KINDS",
    "GATE_PLACEMENTS",
    "GATE_SITES",
    "Gate",
    "GateAnalysis",
    "GateHandle",
    "GateSet",
    "analyze_gates",
    "export_reference_gates",
    "gate_intervention",
    "load_reference_gates",
    "register_gate_kind",
    "train_gates",
]
