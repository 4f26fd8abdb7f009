"""The EM monitor: watch a fine-tune for emergent misalignment while it runs (the ``monitor:`` config block).

Importing this package registers the ``monitor`` training plugin; ``workbench.training`` imports it on demand
(it is this package's ``workbench.training`` entry point) when a config has a ``monitor:`` block.

Before the first step, every ``every`` optimizer steps and after the last one, on fixed probe sets the run
does not train on, the monitor measures (``torch.no_grad``, model in eval mode, one batched pass each):

- ``proj/<vector>/L<layer>``: mean projection of ``blocks.<layer>.hook_resid_post`` onto the unit persona
  vector over the assistant span of teacher-forced reference answers (default: the aligned answers of 16
  shipped general-domain ``contrastive_pairs``);
- ``gen_proj/<vector>/L<layer>``: the same over a few short greedy generations of the model itself;
- ``pref_gap`` / ``pref_share``: general-domain preference gap (length-normalised log-prob of the misaligned
  minus the aligned answer, nats per token) and the share of pairs where the misaligned answer wins;
- ``indomain_loss``: assistant-token NLL of held-out in-domain rows, and ``indomain_gap``: their misaligned
  minus aligned preference when the rows carry pairs (``aligned``/``misaligned`` or ``correction`` keys).

Each measurement is a row of ``<run>/monitor.jsonl`` (values, per-example standard deviations ``sd``,
counts ``n``, and the seconds spent monitoring vs training since the last row). Alert rules turn a row into
a warning (a log line and a row of ``<run>/alerts.jsonl``) or a clean stop (the loop writes a checkpoint;
``--resume`` continues). The monitor never changes what training computes: it draws no random numbers that
training would see (greedy decoding, eval mode, RNG states saved and restored), takes no gradients and puts
the model back in training mode.

The package by job: ``_settings`` (the block's dataclasses), ``_alerts`` (rules), ``_probes`` (the probe
sets), ``_measure`` (one pass), ``_plugin`` (the training plugin), ``_log`` (the run-directory files and
their reader), ``_cli`` (``workbench monitor``), ``_study`` (``docs/study_monitor.md``). The public face::

    from probes.monitor import MonitorSettings, Monitor, read_monitor, evaluate_alerts

The overhead benchmark is ``benchmarks``' ``lora_step_monitor`` row. See ``docs/monitor.md``.
"""

from __future__ import annotations

from workbench.training import register_component

from ._alerts import evaluate_alerts
from ._cli import monitor as monitor_command
from ._log import ALERTS_FILE, MONITOR_FILE, MonitorLog, read_monitor
from ._plugin import Monitor
from ._settings import DEFAULT_EVERY, AlertRule, MonitorSettings, VectorProbe

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
    "monitor_command",
    "read_monitor",
]
