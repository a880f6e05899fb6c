from __future__ import annotations

from citewell.retrieval.lexical import ENGLISH_STOPWORDS, Tokenizer


def test_lowercases_and_splits_unicode_words() -> None:
    tokens = Tokenizer(stem=False)("Größe, Café-au-lait; 東京 IL-6 x_y")
    assert tokens == ["größe", "café", "au", "lait", "東京", "il", "6", "x_y"]


def test_removes_english_stopwords_including_split_contractions() -> None:
    assert Tokenizer(stem=False)("The cells don't divide, and THEY are not here") == [
        "cells",
        "divide",
    ]
    assert {"the", "and", "don", "t", "not"} <= ENGLISH_STOPWORDS


def test_stems_with_snowball() -> None:
    assert Tokenizer()("Running studies of mutated cells") == ["run", "studi", "mutat", "cell"]
    assert Tokenizer()("cell") == Tokenizer()("cells")


def test_name_identifies_the_token_stream() -> None:
    assert Tokenizer().name != Tokenizer(stem=False).name
    assert Tokenizer().name != Tokenizer(stopwords=frozenset({"x"})).name
    assert Tokenizer().name == Tokenizer().name


def test_empty_and_punctuation_only_text() -> None:
    assert Tokenizer()("") == []
    assert Tokenizer()("... --- !!!") == []
