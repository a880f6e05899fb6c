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
            "addressed_to_model",
            r"\b(assistant|ai|chatbot|bot|model|llm|gpt|language model)\s*[:,]\s*(please\s+)?"
            r"(reveal|ignore|disregard|say|reply|respond|answer|output|print|tell|list|send|"
            r"include|write|state|cite|forget|summari[sz]e)\b"
            r"|\b(note|message|instructions?|reminder)s? (to|for) (the |any )?(ai|assistant|"
            r"model|llm|language model|chatbot|bot)s?\b"
            r"|\bif you are an? (ai|assistant|language model|llm|chatbot|bot)\b",
        ),
        (
            "conditional_instruction",
            r"\b(when|if|whenever) you('re| are)? (are )?(asked|answering|summari[sz]ing|"
            r"responding|generating)\b|\byou (must|should|will) (now|always|never|only)\b",
        ),
        (
            "exfiltration",
            r"\b(reveal|print|send|leak)\b.{0,30}\b(password|secret|api key|token)s?\b",
        ),
    )
)


def instruction_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of ``text`` matched by any pattern. Matching runs over the text with
    every whitespace character as a space (same offsets), so an instruction broken across
    lines (PDF extraction, wrapped Markdown) is still found and covers every line it spans."""
    flat = re.sub(r"\s", " ", text)
    return [m.span() for _, pattern in _PATTERNS for m in pattern.finditer(flat)]


def instruction_patterns(text: str) -> tuple[str, ...]:
    """Names of the instruction-like patterns found in ``text`` (empty when none)."""
    flat = re.sub(r"\s", " ", text)
    return tuple(name for name, pattern in _PATTERNS if pattern.search(flat))


def looks_like_instructions(text: str) -> bool:
    return bool(instruction_patterns(text))
