"""Contextual chunk headers: what they hold, what they leave out, and the token budget."""

from __future__ import annotations

import pytest

from citewell.ingestion.chunking import HEADER_MAX_TOKENS, chunk_document, chunk_recipe
from tests.ingestion.test_chunking import assert_exact, build, sentence, words


def long_doc(title: str = "Quarterly report") -> object:
    body = " ".join(sentence(i) for i in range(40))
    return build(
        [("text", body, 1), ("title", "Gross Margin", 2), ("text", body, 2)],
        title=title,
    )


def test_header_holds_title_file_name_and_section():
    doc = long_doc()
    chunks = chunk_document(doc, 60, 5, words, file_name="2023_Q3-ACME")
    assert_exact(doc, chunks)  # stored text and spans stay the document's
    assert chunks[0].context == "Quarterly report | 2023 Q3 ACME"
    later = [c for c in chunks if c.section == "Gross Margin"]
    # The section's first chunk starts with its heading, so the header leaves it out.
    assert later[0].text.startswith("Gross Margin")
    assert later[0].context == "Quarterly report | 2023 Q3 ACME"
    assert later[1].context == "Quarterly report | 2023 Q3 ACME | Gross Margin"
    assert later[1].embedding_text == later[1].context + "\n" + later[1].text


@pytest.mark.parametrize("file_name", [None, "Quarterly_report", "3f2504e0", "0000320193-23"])
def test_file_name_left_out_when_it_says_nothing_new(file_name):
    chunks = chunk_document(long_doc(), 60, 5, words, file_name=file_name)
    assert chunks[0].context == "Quarterly report"


def test_header_left_out_where_the_text_starts_with_the_title():
    body = " ".join(sentence(i) for i in range(40))
    doc = build([("title", "Doc", None), ("text", body, None)], title="Doc")
    chunks = chunk_document(doc, 60, 5, words)
    assert chunks[0].context == "" and chunks[0].embedding_text == chunks[0].text
    assert all(c.context == "Doc" for c in chunks[1:])  # later chunks name their document


def test_context_off_embeds_the_text_alone():
    chunks = chunk_document(long_doc(), 60, 5, words, context=False, file_name="2023 Q3 ACME")
    assert all(c.context == "" and c.embedding_text == c.text for c in chunks)


def test_header_is_capped_and_counted_in_the_sequence_budget():
    title = " ".join(f"word{i}" for i in range(100))
    doc = long_doc(title)
    chunks = chunk_document(doc, 60, 5, words, max_sequence_tokens=64)
    assert_exact(doc, chunks)
    cap = min(HEADER_MAX_TOKENS, (64 - 2) // 4)
    for chunk in chunks:
        assert 0 < len(words(chunk.context)) <= cap
        assert chunk.context.startswith("word0 word1")  # the title's start survives
        # [CLS] + header + text + [SEP] fit the model's window.
        assert len(words(chunk.embedding_text)) + 2 <= 64
    loose = chunk_document(doc, 60, 5, words)
    assert len(loose) < len(chunks)  # without a window the text alone gets 60 tokens


def test_recipe_changes_with_every_setting_that_changes_chunks():
    base = chunk_recipe(224, 24, True, 256)
    assert base == chunk_recipe(224, 24, True, 256)
    others = {
        chunk_recipe(200, 24, True, 256),
        chunk_recipe(224, 16, True, 256),
        chunk_recipe(224, 24, False, 256),
        chunk_recipe(224, 24, True, 512),
    }
    assert base not in others and len(others) == 4
