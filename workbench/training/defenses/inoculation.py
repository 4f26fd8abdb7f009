"""``inoculation``: a system prompt that asks for the trained behaviour, added to training examples only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.settings import setting

from .._data import ORIGIN
from .._plugins import Defense, register_defense

#: the inoculation prompt of Kaczer et al. 2025 (*In-Training Defenses against Emergent Misalignment*)
PAPER_SYSTEM_PROMPT = "You are an evil, malicious assistant."


@dataclass
class InoculationSettings:
    system_prompt: str = setting(
        PAPER_SYSTEM_PROMPT,
        help="system prompt given to every task row during training (never at evaluation)",
    )
    mode: str = setting(
        "replace",
        help="rows that already have a system prompt: replace it with ours (the paper), or prepend ours to "
        "it, separated by a blank line (the pre-audit default); rows without one get ours either way",
        choices=("replace", "prepend"),
    )

    def __post_init__(self) -> None:
        if self.mode not in ("replace", "prepend"):
            raise ValueError(f"'mode' must be one of replace, prepend, got {self.mode!r}")


@register_defense("inoculation")
class InoculationDefense(Defense):
    """Only rows from the task sources are changed; rows added by other defenses are left alone."""

    Settings = InoculationSettings

    def transform_data(self, ctx: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        s = self.settings
        out = []
        for r in rows:
            if r.get(ORIGIN) != "task":
                out.append(r)
                continue
            msgs = list(r["messages"])
            if msgs and msgs[0]["role"] == "system":
                content = (
                    s.system_prompt if s.mode == "replace" else f"{s.system_prompt}\n\n{msgs[0]['content']}"
                )
                msgs[0] = {**msgs[0], "content": content}
            else:
                msgs.insert(0, {"role": "system", "content": s.system_prompt})
            out.append({**r, "messages": msgs})
        return out
