"""Built-in in-training defenses; importing this package registers them (one small module each)."""

from . import (  # noqa: F401
    dpo,
    feature_distance,
    grad_projection,
    inoculation,
    interleave,
    interleave_plus,
    kl,
    mixed,
    olora,
    on_policy,
    safelora,
)
