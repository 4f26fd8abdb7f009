"""Chat helpers: apply a model's chat template and build assistant-only training masks."""

from __future__ import annotations

from typing import Any

from ._errors import WorkbenchError

Message = dict[str, str]


def _merge_system(messages: list[Message]) -> list[Message]:
    """Fold a system prompt into the first user turn, for templates that reject the system role."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if rest and rest[0].get("role") == "user":
        rest[0] = {**rest[0], "content": f"{system}\n\n{rest[0]['content']}"}
    else:
        rest.insert(0, {"role": "user", "content": system})
    return rest


def format_chat(tokenizer: Any, messages: list[Message], add_generation_prompt: bool = True) -> str:
    """Render ``messages`` with the tokenizer's chat template as text.

    Templates that reject a system role (e.g. Gemma's) get the system prompt folded into the first user turn.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise WorkbenchError("this tokenizer has no chat template; pass plain text prompts instead")
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja TemplateError raised by the template's own checks
        if msgs and msgs[0]["role"] == "system" and "system" in str(exc).lower():
            return tokenizer.apply_chat_template(
                _merge_system(msgs), tokenize=False, add_generation_prompt=add_generation_prompt
            )
        raise


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """One user prompt (optionally with a system prompt) rendered ready for generation."""
    msgs: list[Message] = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    return format_chat(tokenizer, msgs, add_generation_prompt=True)


def assistant_mask(tokenizer: Any, messages: list[Message]) -> tuple[list[int], list[bool]]:
    """Token ids of the whole conversation and a mask that is True on assistant-written tokens.

    The mask covers each assistant turn's content and its end-of-turn marker, found by rendering the
    conversation up to each assistant turn (with the generation prompt) and through it, and mapping the
    character span to tokens with the tokenizer's offsets. Prompt and padding tokens are never in the loss.
    """
    full = format_chat(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = format_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        through = format_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not full.startswith(through) or not through.startswith(before):
            raise WorkbenchError(
                "the chat template does not render conversations incrementally; cannot locate assistant turns"
            )
        spans.append((len(before), len(through.rstrip())))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = []
    for start, end in enc["offset_mapping"]:
        mask.append(any(s <= start and end <= e and end > start for s, e in spans))
    return ids, mask
