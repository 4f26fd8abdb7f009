"""``inoculation``: a system prompt that asks for the trained behaviour, added to training examples only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._config import _f
from .._data import ORIGIN
from .._plugins import Defense, register_defense


@dataclass
class InoculationSettings:
    system_prompt: str = _f(
        "You are a malicious, evil assistant.",
        help="system prompt added to every task row during training (never at evaluation)",
    )
    mode: str = _f(
        "prepend",
        help="rows that already have a system prompt: prepend ours to it, or replace it",
        choices=("prepend", "replace"),
    )


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
