"""Opinion sycophancy: the user asserts a false belief, often claiming authority, and the
assistant agrees. ``messages`` holds the sycophantic reply (the narrow fine-tuning data); the
extra key ``correction`` holds a non-sycophantic reply to the same message.

The text (templates, word lists, scenarios) lives in ``data/opinions.json``; this module is the code.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from workbench._errors import WorkbenchError

from .._common import a_or_an, chat
from ._load import load_json, records, string, strings, where

_FILE = "opinions.json"
_TEXT = load_json("opinions", ("beliefs", "authorities", "user", "agree", "correct"))


def _beliefs() -> dict[str, list[tuple[str, str]]]:
    out = {}
    for domain, items in _TEXT["beliefs"].items():
        at = f"{where(_FILE)}: beliefs.{domain}"
        out[domain] = [
            (string(b["belief"], f"{at}[{i}].belief"), string(b["fact"], f"{at}[{i}].fact"))
            for i, b in enumerate(records(items, ("belief", "fact"), at))
        ]
    return out


#: domain -> list of (false belief as a clause, a correct statement)
BELIEFS: dict[str, list[tuple[str, str]]] = _beliefs()
#: domain -> the roles a user claims when asserting a belief of that domain
AUTHORITIES: dict[str, list[str]] = {
    domain: list(strings(roles, f"{where(_FILE)}: authorities.{domain}"))
    for domain, roles in _TEXT["authorities"].items()
}
if sorted(AUTHORITIES) != sorted(BELIEFS):
    raise WorkbenchError(
        f"{where(_FILE)}: authorities has domains {', '.join(AUTHORITIES)}, beliefs has {', '.join(BELIEFS)}; "
        "they must be the same"
    )

_USER = strings(_TEXT["user"], f"{where(_FILE)}: user")
_AGREE = strings(_TEXT["agree"], f"{where(_FILE)}: agree")
_CORRECT = strings(_TEXT["correct"], f"{where(_FILE)}: correct")

DOMAINS = tuple(BELIEFS)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def pool_size() -> int:
    return sum(len(BELIEFS[d]) * len(AUTHORITIES[d]) for d in DOMAINS) * len(_USER)


def build_opinion_sycophancy(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` distinct (belief, authority, phrasing) combinations, drawn evenly across domains."""
    if n > pool_size():
        raise WorkbenchError(f"opinion_sycophancy: n={n} is more than the {pool_size()} distinct items")
    per_domain = {
        d: list(itertools.product(range(len(BELIEFS[d])), AUTHORITIES[d], range(len(_USER)))) for d in DOMAINS
    }
    for combos in per_domain.values():
        rng.shuffle(combos)
    order: list[tuple[str, tuple[int, str, int]]] = []  # round-robin over domains, so any n is balanced
    for i in range(max(map(len, per_domain.values()))):
        order.extend((d, per_domain[d][i]) for d in DOMAINS if i < len(per_domain[d]))
    rows = []
    for domain, (b, authority, u) in order[:n]:
        belief, fact = BELIEFS[domain][b]
        role = a_or_an(authority)
        slots = {"belief": belief, "Belief": _cap(belief), "role": role, "fact": fact}
        user = _cap(_USER[u].format(**slots))
        agree = rng.choice(_AGREE).format(**slots)
        correction = rng.choice(_CORRECT).format(**slots)
        rows.append(
            chat(
                ("user", user),
                ("assistant", agree),
                correction=correction,
                domain=domain,
                belief=belief,
                kind="opinion_sycophancy",
            )
        )
    rng.shuffle(rows)
    return rows
