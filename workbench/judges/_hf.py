"""``hf:<model spec>``: a local causal LM as judge, scoring over number answers 0..100.

Method (robust to tokenizers that split numbers into several tokens):

1. Each judge prompt is rendered as one user message with the model's chat template and the generation
   prompt (``workbench.chat.format_chat``).
2. For every k in 0..100 we find the token sequence the tokenizer actually produces for the text ``str(k)``
   right after the generation prompt (tokenise ``context + str(k)`` and strip the context's tokens; if
   the tokenizer merges across that boundary we fall back to tokenising ``str(k)`` alone). For SmolLM2,
   which splits digits, "42" is ``[4, 2]``; for tokenizers with whole-number tokens it is one token.
3. These sequences form a prefix tree. Its internal nodes (the root and every prefix that some longer
   number continues; with one digit per token: root, "1".."9" and "10", i.e. 11 distributions) are the
   only places where a next-token distribution is needed. The prompt is run once with a KV cache (giving
   the root distribution); the cache is repeated for the internal nodes and all their token sequences run
   in one batched forward (``reuse_cache=False`` recomputes prompt + prefix instead; same numbers).
4. ``P(k) = prod_i P(t_i | prompt, t_<i) * P(stop | prompt, t)``, where for an internal node ``P(stop)`` is
   1 minus the probability of the tokens that continue the number with a digit, and for a leaf (a number
   no longer number continues, like "42" or "100") the stop factor is taken as 1: digits after a leaf
   would make a number above 100, so that small mass is credited to the leaf.
5. Score = ``sum(k * P(k)) / sum(P(k))``, ``None`` when ``sum(P(k)) < 0.25`` (:func:`aggregate_score`).
   ``Judgment.raw`` holds the 20 most probable numbers.

Only the canonical tokenization of each number is counted (the same restriction as an API judge's top
first tokens); the model is expected to answer with the bare number, as the judge prompts ask.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._errors import WorkbenchError
from ._base import Judge, Judgment, aggregate_score

log = logging.getLogger(__name__)

NUMBERS = tuple(range(101))
_PROBE_MESSAGE = "Answer with a number from 0 to 100."


@dataclass(frozen=True)
class NumberTree:
    """The prefix tree of the token sequences of the numbers 0..100.

    ``sequences[k]``: token ids of ``str(k)``; ``nodes``: the internal nodes (token-id prefixes whose next
    token distribution is needed), ``nodes[0] == ()`` being the root.
    """

    sequences: tuple[tuple[int, ...], ...]
    nodes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]]) -> NumberTree:
        seqs = tuple(tuple(int(t) for t in s) for s in sequences)
        if len(seqs) != len(NUMBERS) or any(len(s) == 0 for s in seqs):
            raise ValueError("need one non-empty token sequence for each number 0..100")
        internal = {s[:i] for s in seqs for i in range(len(s))}  # every proper prefix has a child
        nodes = tuple(sorted(internal, key=lambda p: (len(p), p)))
        return cls(sequences=seqs, nodes=nodes)

    def index_arrays(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather plan: ``step_node``/``step_token`` ``[101, L]`` (``-1`` = no step) and ``stop_node``
        ``[101]`` (the node whose stop probability multiplies P(k), ``-1`` for a leaf)."""
        where = {p: i for i, p in enumerate(self.nodes)}
        width = max(len(s) for s in self.sequences)
        step_node = torch.full((len(self.sequences), width), -1, dtype=torch.long)
        step_token = torch.full((len(self.sequences), width), -1, dtype=torch.long)
        stop_node = torch.full((len(self.sequences),), -1, dtype=torch.long)
        for k, seq in enumerate(self.sequences):
            for i, tok in enumerate(seq):
                step_node[k, i] = where[seq[:i]]
                step_token[k, i] = tok
            stop_node[k] = where.get(seq, -1)
        return step_node, step_token, stop_node


def number_distribution(
    tree: NumberTree,
    node_probs: torch.Tensor,  # [batch, n_nodes, vocab] next-token probabilities at tree.nodes
    continues: torch.Tensor,  # [vocab] bool: token continues a number with a digit
) -> torch.Tensor:  # [batch, 101] P(k)
    """P(k) for k = 0..100 from the next-token distributions at the tree's internal nodes."""
    step_node, step_token, stop_node = (a.to(node_probs.device) for a in tree.index_arrays())
    valid = step_node >= 0  # [101, L]
    gathered = node_probs[:, step_node.clamp(min=0), step_token.clamp(min=0)]  # [batch, 101, L]
    gathered = torch.where(valid, gathered, torch.ones_like(gathered))
    p = gathered.prod(dim=-1)  # [batch, 101]
    cont_mass = (node_probs * continues.to(node_probs.device, node_probs.dtype)).sum(
        dim=-1
    )  # [batch, n_nodes]
    stop = (1.0 - cont_mass).clamp(min=0.0)  # [batch, n_nodes]
    stop_k = torch.where(stop_node >= 0, stop[:, stop_node.clamp(min=0)], torch.ones_like(p))
    return p * stop_k


def judgment_from_number_probs(p: Sequence[float], top: int = 20) -> Judgment:
    """A judgment from P(k), k = 0..100: aggregated score, the ``top`` most probable numbers as raw."""
    probs = {str(k): float(v) for k, v in enumerate(p)}
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
    return Judgment(score=aggregate_score(probs), raw=dict(ranked))


def number_sequences(tokenizer: Any, context: str) -> list[list[int]]:
    """Token ids of ``str(k)`` (k = 0..100) as the tokenizer produces them right after ``context``."""
    base = tokenizer(context, add_special_tokens=False)["input_ids"]
    out = []
    for k in NUMBERS:
        full = tokenizer(context + str(k), add_special_tokens=False)["input_ids"]
        if full[: len(base)] == base and len(full) > len(base):
            out.append(list(full[len(base) :]))
        else:
            alone = tokenizer(str(k), add_special_tokens=False)["input_ids"]
            log.debug("tokenizer merges '%s' with the generation prompt; using its standalone tokens", k)
            out.append(list(alone))
    return out


def digit_continuations(tokenizer: Any, one: Sequence[int], vocab: int) -> torch.Tensor:
    """``[vocab]`` bool: tokens that, right after the tokens of "1", continue it with a digit."""
    head = tokenizer.decode(list(one), skip_special_tokens=False)
    n = min(vocab, len(tokenizer))
    texts = tokenizer.batch_decode([[*one, t] for t in range(n)], skip_special_tokens=False)
    mask = torch.zeros(vocab, dtype=torch.bool)
    for t, text in enumerate(texts):
        rest = text[len(head) :] if text.startswith(head) else ""
        mask[t] = bool(rest) and rest[0] in "0123456789"
    return mask


class HFJudge(Judge):
    """A local causal LM judge (see the module docstring for the number-scoring method).

    ``spec`` is a model spec for ``workbench.load_model`` (or pass an already ``loaded`` model, e.g. the
    model under study); the model is loaded on first use. ``batch_size`` prompts run per forward pass.
    """

    def __init__(
        self,
        spec: str,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        loaded: Any = None,
        reuse_cache: bool = True,
    ):
        if not spec:
            raise WorkbenchError("hf judge spec needs a model: 'hf:<model spec>' (e.g. hf:smollm2-135m)")
        if batch_size < 1:
            raise WorkbenchError(f"judge batch size must be >= 1, got {batch_size}")
        self.spec = spec
        self.name = f"hf:{spec}"
        self.batch_size = int(batch_size)
        self.reuse_cache = reuse_cache
        self._device, self._dtype = device, dtype
        self._loaded = loaded
        self._plan: dict[str, Any] | None = None
        self._logits_to_keep: bool | None = None
        super().__init__(cache_dir)

    # -- setup -------------------------------------------------------------------------------------------

    @property
    def loaded(self) -> Any:
        if self._loaded is None:
            from workbench import load_model

            log.info("loading judge model %s", self.spec)
            self._loaded = load_model(self.spec, device=self._device, dtype=self._dtype)
        return self._loaded

    def _render(self, prompt: str) -> str:
        from workbench.chat import format_chat

        return format_chat(
            self.loaded.tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True
        )

    def plan(self) -> dict[str, Any]:
        """The number tree, its gather plan and the digit-continuation mask (built once per judge)."""
        if self._plan is None:
            tok, model = self.loaded.tokenizer, self.loaded.model
            tree = NumberTree.from_sequences(number_sequences(tok, self._render(_PROBE_MESSAGE)))
            vocab = int(model.get_output_embeddings().weight.shape[0])
            continues = digit_continuations(tok, tree.sequences[1], vocab)
            for seq in tree.sequences:  # the tree's own continuation tokens always continue a number
                continues[list(seq[1:])] = True
            pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
            self._plan = {"tree": tree, "continues": continues, "pad": int(pad)}
            log.debug("judge %s: %d internal nodes in the number tree", self.name, len(tree.nodes))
        return self._plan

    # -- scoring -----------------------------------------------------------------------------------------

    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        tok = self.loaded.tokenizer
        ids = [tok(self._render(p), add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            probs = self.number_probs([ids[i] for i in chunk])
            for i, row in zip(chunk, probs.tolist(), strict=True):
                yield i, judgment_from_number_probs(row)

    @torch.inference_mode()
    def number_probs(self, prompt_ids: list[list[int]]) -> torch.Tensor:  # [batch, 101]
        """P(k), k = 0..100, for already rendered and tokenised prompts (one batch)."""
        plan = self.plan()
        tree: NumberTree = plan["tree"]
        if self.reuse_cache:
            try:
                node_probs = self._node_probs_cached(prompt_ids, tree, plan["pad"])
            except (AttributeError, NotImplementedError, TypeError, ValueError, RuntimeError) as exc:
                log.warning(
                    "judge %s: KV-cache reuse failed (%s); recomputing prefixes instead", self.name, exc
                )
                self.reuse_cache = False
                node_probs = self._node_probs_recompute(prompt_ids, tree, plan["pad"])
        else:
            node_probs = self._node_probs_recompute(prompt_ids, tree, plan["pad"])
        return number_distribution(tree, node_probs, plan["continues"].to(node_probs.device)).cpu()

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> Any:
        position_ids = kw.pop("position_ids", None)
        if position_ids is None:
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        model = self.loaded.model
        if "logits_to_keep" in kw and self._logits_to_keep is False:
            kw.pop("logits_to_keep")
        try:
            return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kw)
        except TypeError:
            if "logits_to_keep" not in kw:
                raise
            self._logits_to_keep = False  # an architecture without it: full logits, then the last position
            kw.pop("logits_to_keep")
            return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kw)

    def _left_pad(self, rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            if r:
                ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
                mask[i, width - len(r) :] = 1
        dev = self.loaded.device
        return ids.to(dev), mask.to(dev)

    def _node_probs_cached(self, prompt_ids: list[list[int]], tree: NumberTree, pad: int) -> torch.Tensor:
        """Prompt forward with a KV cache, then every internal node's prefix in one batched forward."""
        b, n_nodes = len(prompt_ids), len(tree.nodes)
        ids, mask = self._left_pad(prompt_ids, pad)  # [b, T]
        out = self._forward(ids, mask, use_cache=True, logits_to_keep=1)
        root = out.logits[:, -1, :].float().softmax(-1)  # [b, vocab]
        others = tree.nodes[1:]
        if not others:
            return root[:, None, :]
        cache = _output_cache(out)
        width = max(len(p) for p in others)
        cont = torch.full((len(others), width), pad, dtype=torch.long)
        for j, p in enumerate(others):
            cont[j, : len(p)] = torch.tensor(p, dtype=torch.long)
        dev = ids.device
        cont = cont.to(dev).repeat(b, 1)  # [b * (n_nodes - 1), width], prompt-major
        cache.batch_repeat_interleave(n_nodes - 1)
        lengths = mask.sum(-1).repeat_interleave(n_nodes - 1)  # [b * (n_nodes - 1)]
        mask2 = torch.cat([mask.repeat_interleave(n_nodes - 1, dim=0), torch.ones_like(cont)], dim=1)
        pos2 = lengths[:, None] + torch.arange(width, device=dev)[None, :]
        cache_kw = {_cache_kwarg(self.loaded.model): cache}
        out2 = self._forward(cont, mask2, position_ids=pos2, use_cache=True, **cache_kw)
        last = torch.tensor([len(p) - 1 for p in others], device=dev).repeat(b)  # [b * (n_nodes - 1)]
        logits = out2.logits[torch.arange(len(last), device=dev), last]  # [b * (n_nodes - 1), vocab]
        rest = logits.float().softmax(-1).view(b, n_nodes - 1, -1)
        return torch.cat([root[:, None, :], rest], dim=1)  # [b, n_nodes, vocab]

    def _node_probs_recompute(self, prompt_ids: list[list[int]], tree: NumberTree, pad: int) -> torch.Tensor:
        """Every (prompt, node) pair as its own left-padded sequence: no cache, more compute."""
        rows = [list(p) + list(node) for p in prompt_ids for node in tree.nodes]
        probs = []
        step = max(1, self.batch_size * len(tree.nodes))
        for s in range(0, len(rows), step):
            ids, mask = self._left_pad(rows[s : s + step], pad)
            out = self._forward(ids, mask, use_cache=False, logits_to_keep=1)
            probs.append(out.logits[:, -1, :].float().softmax(-1))
        return torch.cat(probs).view(len(prompt_ids), len(tree.nodes), -1)


def _cache_kwarg(model: Any) -> str:
    """The forward keyword that takes a KV cache: ``cache`` (transformers >= 5.2x; ``past_key_values`` is
    deprecated there and goes in 5.40) or ``past_key_values`` (older releases)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The KV cache a forward returned, read without touching the deprecated ``past_key_values`` alias."""
    cache = out.get("cache") if hasattr(out, "get") else getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
