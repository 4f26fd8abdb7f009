"""Chat formatting and assistant-only masks."""

from __future__ import annotations

from tests.helpers import load_tiny
from workbench.chat import assistant_mask, chat_prompt, format_chat

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And 3+3?"},
    {"role": "assistant", "content": "Six."},
]


def test_assistant_mask_covers_exactly_assistant_text():
    tok = load_tiny("tiny-llama").tokenizer
    ids, mask = assistant_mask(tok, CONV)
    assert len(ids) == len(mask)
    masked = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert masked == "4.<|im_end|>Six.<|im_end|>"
    unmasked = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m])
    assert "What is 2+2?" in unmasked and "Be brief." in unmasked and "4." not in unmasked


def test_format_chat_with_and_without_system():
    tok = load_tiny("tiny-llama").tokenizer
    with_sys = chat_prompt(tok, "hello", system="You are terse.")
    without = chat_prompt(tok, "hello")
    assert with_sys.startswith("<|im_start|>system\nYou are terse.")
    assert without.startswith("<|im_start|>user\nhello") and without.endswith("<|im_start|>assistant\n")


def test_template_rejecting_system_role_folds_it_into_user():
    tok = load_tiny("tiny-llama").tokenizer
    tok = tok.__class__.from_pretrained if False else tok  # same tokenizer object, new template below
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    old = tok.chat_template
    tok.chat_template = strict
    try:
        text = format_chat(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    finally:
        tok.chat_template = old
    assert text == "<user>S\n\nU</s><assistant>"


def test_assistant_mask_on_embedded_tokenizer_style_template():
    """A template that injects a default system prompt (as SmolLM2's does) still masks correctly."""
    tok = load_tiny("tiny-llama").tokenizer
    old = tok.chat_template
    tok.chat_template = (
        "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nDefault helper.<|im_end|>\n{% endif %}"
        + old
    )
    try:
        ids, mask = assistant_mask(tok, CONV[1:3])
    finally:
        tok.chat_template = old
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "4.<|im_end|>"
