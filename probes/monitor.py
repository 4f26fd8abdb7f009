"""The EM monitor as a training plugin: importing this module registers the ``monitor`` config block.

``workbench.training`` imports it on demand (it is this package's ``workbench.training`` entry point) when
a config has a ``monitor:`` block. The public API of the monitor lives here too::

    from probes.monitor import MonitorSettings, read_monitor, evaluate_alerts, monitor_overhead

See ``docs/monitor.md``.
"""

from __future__ import annotations

from workbench.training import register_component

from ._monitor import (
    ALERTS_FILE,
    DEFAULT_EVERY,
    MONITOR_FILE,
    AlertRule,
    Monitor,
    MonitorLog,
    MonitorSettings,
    VectorProbe,
    evaluate_alerts,
    monitor_overhead,
    read_monitor,
)

# the monitor only observes training: its settings may change between a run and its --resume
register_component("monitor", MonitorSettings, Monitor, kind="plugin", resume_free=True)

__all__ = [
    "ALERTS_FILE",
    "DEFAULT_EVERY",
    "MONITOR_FILE",
    "AlertRule",
    "Monitor",
    "MonitorLog",
    "MonitorSettings",
    "VectorProbe",
    "evaluate_alerts",
    "monitor_overhead",
    "read_monitor",
]
