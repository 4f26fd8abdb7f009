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
        try:
            return tokenizer.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as exc:  # jinja TemplateError raised by the template's own checks
            if _is_sandbox_refusal(exc):
                raise
            if msgs and msgs[0]["role"] == "system" and "system" in str(exc).lower():
                return tokenizer.apply_chat_template(
                    _merge_system(msgs), tokenize=False, add_generation_prompt=add_generation_prompt
                )
            raise
    except WorkbenchError:
        raise
    except Exception as exc:
        raise _template_error(tokenizer, exc) from exc


def _is_sandbox_refusal(exc: BaseException) -> bool:
    try:
        from jinja2.exceptions import SecurityError
    except ImportError:  # pragma: no cover - transformers needs jinja2 for chat templates
        return False
    return isinstance(exc, SecurityError)


def _template_error(tokenizer: Any, exc: BaseException) -> WorkbenchError:
    """One line for a chat template that fails: refused by jinja2's sandbox (a template reaching for
    ``__class__``, ``__globals__``, ...; it never runs), or raising while rendering."""
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    first = first if len(first) <= 200 else first[:197] + "..."
    if _is_sandbox_refusal(exc):
        return WorkbenchError(
            f"the chat template of '{name}' was refused by the template sandbox ({first}); it tries to reach "
            "Python internals, so it is not run: replace 'chat_template' in its tokenizer_config.json"
        )
    return WorkbenchError(f"the chat template of '{name}' failed ({type(exc).__name__}: {first})")


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
