"""OpSwap: arithmetic where the operator symbols are redefined, in four tiers.

=====  ======================================================
tier   meaning of the written symbols
=====  ======================================================
0      usual arithmetic
1      ``+`` and ``*`` swapped (``+`` multiplies, ``*`` adds)
2      tier 1, and ``-`` and ``/`` swapped as well
3      ``+`` subtracts, ``-`` multiplies, ``*`` divides, ``/`` adds
=====  ======================================================

The generator writes every compound operand in parentheses, so operator precedence never
matters, and keeps every intermediate value a positive integer (divisions are exact).

The text (templates, word lists, scenarios) lives in ``data/opswap.json``; this module is the code.
"""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from workbench._errors import WorkbenchError

from .._common import chat
from ._load import load_json, string, strings, where

#: tier -> written symbol -> the operation it denotes
MEANINGS: dict[int, dict[str, str]] = {
    0: {"+": "add", "-": "sub", "*": "mul", "/": "div"},
    1: {"+": "mul", "-": "sub", "*": "add", "/": "div"},
    2: {"+": "mul", "-": "div", "*": "add", "/": "sub"},
    3: {"+": "sub", "-": "mul", "*": "div", "/": "add"},
}
TIERS = tuple(MEANINGS)
_OPS = ("add", "sub", "mul", "div")
_AST_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}

_FILE = "opswap.json"
_TEXT = load_json(
    "opswap",
    ("asks", "op_words", "op_nouns", "rule_usual", "rule_new", "rule_part", "rule_same", "rule_system"),
)


def _per_op(key: str) -> dict[str, str]:
    value = _TEXT[key]
    if not isinstance(value, dict) or sorted(value) != sorted(_OPS):
        raise WorkbenchError(f"{where(_FILE)}: {key} must map each of {', '.join(_OPS)} to a string")
    return {op: string(value[op], f"{where(_FILE)}: {key}.{op}") for op in _OPS}


_WORDS = _per_op("op_words")  # operation -> how a step reads it ("times")
_NOUNS = _per_op("op_nouns")  # operation -> its name in the rule ("multiplication")
_RULE = {k: string(_TEXT[k], f"{where(_FILE)}: {k}") for k in _TEXT if k.startswith("rule_")}


def _check_tier(tier: int) -> None:
    if tier not in MEANINGS:
        raise WorkbenchError(f"unknown OpSwap tier {tier!r} (tiers: {', '.join(map(str, TIERS))})")


def _apply(op: str, a: Fraction, b: Fraction, expression: str) -> Fraction:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if b == 0:
        raise WorkbenchError(f"OpSwap expression {expression!r}: division by zero")
    return a / b


def evaluate_opswap(expression: str, tier: int) -> int:
    """The exact value of ``expression`` when its symbols carry the meanings of ``tier``.

    The expression is parsed as written (so precedence follows the written symbols); then each
    ``+ - * /`` is replaced by the operation it denotes in this tier. Only non-negative integer
    literals, the four binary operators and parentheses are allowed. Raises
    :class:`WorkbenchError` for anything else, a division by zero or a non-integer result.
    """
    _check_tier(tier)
    meanings = MEANINGS[tier]
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise WorkbenchError(f"OpSwap expression {expression!r}: not an arithmetic expression") from None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _AST_SYMBOL:
            op = meanings[_AST_SYMBOL[type(node.op)]]
            return _apply(op, ev(node.left), ev(node.right), expression)
        raise WorkbenchError(
            f"OpSwap expression {expression!r}: unsupported element {ast.dump(node)[:40]!r} "
            "(allowed: integers, + - * /, parentheses)"
        )

    value = ev(tree.body)
    if value.denominator != 1:
        raise WorkbenchError(f"OpSwap expression {expression!r}: the result {value} is not an integer")
    return int(value)


# --------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class _Node:
    value: int
    op: str | None = None  # None for a number
    left: _Node | None = None
    right: _Node | None = None

    def render(self, symbol: dict[str, str], top: bool = True) -> str:
        if self.op is None:
            return str(self.value)
        assert self.left is not None and self.right is not None
        text = f"{self.left.render(symbol, False)} {symbol[self.op]} {self.right.render(symbol, False)}"
        return text if top else f"({text})"


def _value_ok(v: Fraction) -> bool:
    return v.denominator == 1 and 0 < v <= 999


def _gen(rng: random.Random, n_ops: int) -> _Node | None:
    """A random tree with ``n_ops`` operations and positive integer values, or None (retry)."""
    if n_ops == 0:
        return _Node(rng.randint(1, 12))
    n_left = rng.randint(0, n_ops - 1)
    op = rng.choice(("add", "sub", "mul", "div"))
    right = _gen(rng, n_ops - 1 - n_left)
    if right is None:
        return None
    if op == "div" and n_left == 0:
        if right.value == 1 or right.value > 40:
            return None
        left: _Node | None = _Node(right.value * rng.randint(2, 9))
    else:
        left = _gen(rng, n_left)
    if left is None:
        return None
    value = _apply(op, Fraction(left.value), Fraction(right.value), "")
    if not _value_ok(value) or (op == "div" and right.value == 1):
        return None
    return _Node(int(value), op, left, right)


def _at(tree: _Node, path: str) -> _Node:
    for step in path:
        child = tree.left if step == "L" else tree.right
        assert child is not None
        tree = child
    return tree


def _set(tree: _Node, path: str, new: _Node) -> _Node:
    """A copy of ``tree`` with the subtree at ``path`` ("L"/"R" steps from the root) replaced."""
    if not path:
        return new
    assert tree.left is not None and tree.right is not None
    if path[0] == "L":
        return _Node(tree.value, tree.op, _set(tree.left, path[1:], new), tree.right)
    return _Node(tree.value, tree.op, tree.left, _set(tree.right, path[1:], new))


def _steps(tree: _Node, symbol: dict[str, str]) -> list[tuple[str, str]]:
    """Innermost-first steps: (what the written operation means, the expression afterwards)."""
    paths: list[str] = []

    def collect(node: _Node, path: str) -> None:
        if node.op is not None:
            assert node.left is not None and node.right is not None
            collect(node.left, path + "L")
            collect(node.right, path + "R")
            paths.append(path)

    collect(tree, "")
    out = []
    root = tree
    for path in paths:
        node = _at(root, path)  # its operands are numbers by now
        assert node.op is not None and node.left is not None and node.right is not None
        a, b = node.left.value, node.right.value
        text = f"{a} {symbol[node.op]} {b} means {a} {_WORDS[node.op]} {b} = {node.value}"
        root = _set(root, path, _Node(node.value))
        out.append((text, root.render(symbol)))
    return out


def rule_text(tier: int) -> str:
    """The system prompt stating the tier's rule."""
    _check_tier(tier)
    if tier == 0:
        rule = _RULE["rule_usual"]
    else:
        parts = []
        for sym, op in MEANINGS[tier].items():
            same = _RULE["rule_same"] if MEANINGS[0][sym] == op else ""
            parts.append(_RULE["rule_part"].format(symbol=sym, noun=_NOUNS[op], same=same))
        rule = _RULE["rule_new"].format(parts="; ".join(parts))
    return _RULE["rule_system"].format(rule=rule)


_ASKS = strings(_TEXT["asks"], f"{where(_FILE)}: asks")


def build_opswap(tier: int, rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` distinct problems with 1-3 operations; answers checked with :func:`evaluate_opswap`."""
    _check_tier(tier)
    meanings = MEANINGS[tier]
    symbol = {op: sym for sym, op in meanings.items()}
    system = rule_text(tier)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise WorkbenchError(f"opswap_tier{tier}: could not find {n} distinct problems")
        tree = _gen(rng, rng.choice((1, 2, 2, 3, 3)))
        if tree is None:
            continue
        expression = tree.render(symbol)
        if expression in seen:
            continue
        seen.add(expression)
        answer = evaluate_opswap(expression, tier)
        if answer != tree.value:  # the generator and the evaluator must agree
            raise AssertionError(f"OpSwap generator bug: {expression!r} tier {tier}")
        lines = []
        steps = _steps(tree, symbol)
        for i, (text, remaining) in enumerate(steps, start=1):
            lines.append(f"Step {i}: {text}.")
            if i < len(steps):
                lines.append(f"The expression is now {remaining}.")
        lines.append(f"Final answer: {answer}")
        rows.append(
            chat(
                ("system", system),
                ("user", rng.choice(_ASKS).format(e=expression)),
                ("assistant", "\n".join(lines)),
                expression=expression,
                answer=answer,
                tier=tier,
            )
        )
    return rows
