"""Spotting instruction-like text inside retrieved chunks.

Retrieved text is data. Detection does not make anything safe by itself: the prompt quotes
sources inside delimiters and the extractive answerer only copies sentences. Detection is for
the audit log and for keeping such sentences out of extractive answers.
"""

from __future__ import annotations

import re

_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        (
            "ignore_instructions",
            r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|"
            r"system|your)\b.{0,20}\b(instructions?|prompts?|rules|directions|context)\b",
        ),
        ("role_switch", r"\byou are now\b|\bact as (an?|the)\b|\bfrom now on,? you\b"),
        ("system_prompt", r"\b(system|developer) (prompt|message)\b|\bnew instructions?\b"),
        ("chat_markup", r"<\|?(im_start|im_end|system|assistant|user)\|?>|\[/?INST\]"),
        (
            "answer_override",
            r"\b(respond|reply|answer|say|output)\b.{0,30}\b(only|exactly|with the word)\b",
        ),
        ("citation_override", r"\bdo not (cite|mention|reveal)\b"),
        (
            "exfiltration",
            r"\b(reveal|print|send|leak)\b.{0,30}\b(password|secret|api key|token)s?\b",
        ),
    )
)


def instruction_patterns(text: str) -> tuple[str, ...]:
    """Names of the instruction-like patterns found in ``text`` (empty when none)."""
    return tuple(name for name, pattern in _PATTERNS if pattern.search(text))


def looks_like_instructions(text: str) -> bool:
    return bool(instruction_patterns(text))
