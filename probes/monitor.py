"""The EM monitor as a training plugin: importing this module registers the ``monitor`` config block.

``workbench.training`` imports it on demand (it is listed in ``PLUGIN_MODULES``) when a config has a
``monitor:`` block. The public API of the monitor lives here too::

    from probes.monitor import MonitorSettings, read_monitor, evaluate_alerts, monitor_overhead

See ``docs/monitor.md``.
"""

from __future__ import annotations

from workbench.training import register_plugin

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
    make_monitor,
    monitor_overhead,
    read_monitor,
)

register_plugin("monitor", make_monitor)

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
