"""The shipped gate kinds, one module each (importing this package registers them)."""

from ._input_dependent import InputDependentGate
from ._low_rank import LowRankGate
from ._per_channel import PerChannelGate
from ._per_head import PerHeadGate

__all__ = ["InputDependentGate", "LowRankGate", "PerChannelGate", "PerHeadGate"]
