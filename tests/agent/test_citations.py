import pytest

from citewell.agent.citations import (
    markers,
    split_sentences,
    strip_unstated_addresses,
    verify_citations,
)


def test_out_of_range_marker_is_removed_and_counted():
    v = verify_citations("Sales rose 5% [1]. Costs fell [5]. Margin grew [2][4].", n_sources=4)
    assert v.removed == 1
    assert "[5]" not in v.text
    assert v.text == "Sales rose 5% [1]. Costs fell. Margin grew [2][4]."
    assert v.unsupported == ("Costs fell.",)
    assert v.cited == (1, 2, 4)


def test_grouped_and_zero_markers():
    v = verify_citations("A fact [1, 7]. Another [0]. Third [3; 2].", n_sources=3)
    assert v.removed == 2
    assert [s.citations for s in v.sentences] == [(1,), (), (3, 2)]
    assert v.text == "A fact [1]. Another. Third [3][2]."


def test_marker_after_full_stop_belongs_to_previous_sentence():
    assert split_sentences("Sales rose. [1] Costs fell. [2][3]") == [
        "Sales rose. [1]",
        "Costs fell. [2][3]",
    ]
    v = verify_citations("Sales rose. [1] Costs fell. [2]", n_sources=2)
    assert v.unsupported == ()


def test_every_sentence_without_citation_is_flagged():
    v = verify_citations("First claim.\nSecond claim [1].\n- bullet without source", 1)
    assert v.unsupported == ("First claim.", "- bullet without source")


def test_lowercase_after_full_stop_is_not_a_new_sentence():
    # Abbreviations ("approx. total") must not cut a quoted sentence away from its marker.
    v = verify_citations("Revenue was approx. twelve million [1].", 1)
    assert len(v.sentences) == 1 and v.unsupported == ()


def test_no_sources_removes_every_marker():
    v = verify_citations("Claim [1].", 0)
    assert v.removed == 1 and v.unsupported == ("Claim.",)
    assert markers("x [1, 2] y [3]") == [1, 2, 3]


def test_marker_with_thousands_of_digits_is_removed_not_a_crash():
    # int() refuses strings over 4,300 digits: a model writing such a marker crashed the answer.
    huge = "1" + "0" * 5000
    v = verify_citations(f"Sales rose [{huge}]. Costs fell [1, {huge}].", n_sources=2)
    assert v.removed == 2 and v.text == "Sales rose. Costs fell [1]."
    assert v.unsupported == ("Sales rose.",)
    assert markers(f"x [{huge}]") == [-1]


@pytest.mark.parametrize(
    "text",
    [
        "Leave is 20 weeks [1](p. 3).",  # a citation and a remark, not a link
        "Sales rose 3/4 [1].",
        "The ratio is a<b (c) [2].",
        "An <b>important</b> point [1].",
        "Use `x = y` in code [1].",
        "Details: https://intranet.example/leave [1].",  # stated by the source
        "[The policy](https://intranet.example/leave) [1]",
    ],
)
def test_an_answer_without_unstated_addresses_is_left_as_it_is(text: str) -> None:
    stated = "Leave is described at https://intranet.example/leave by HR."
    assert strip_unstated_addresses(text, stated) == (text, 0)


def test_unstated_addresses_are_removed_and_counted() -> None:
    stated = "Leave is described at https://intranet.example/leave by HR."
    text = (
        "Leave is 20 weeks [1]. ![x](https://intranet.example/leave.png) "
        "[More](https://intranet.example/leave?d=20) <https://c.example/?d=1> "
        "<a href='https://c.example'>here</a> mailto:hr@c.example"
    )
    kept, removed = strip_unstated_addresses(text, stated)
    assert "c.example" not in kept and "leave.png" not in kept and "?d=20" not in kept, kept
    assert kept.startswith("Leave is 20 weeks [1]. x More") and removed == 5


@pytest.mark.parametrize(
    "text",
    [
        "Claims go to https://intranet.example/leave, within 30 days [1].",
        "Claims go to https://intranet.example/leave; HR answers [1].",
        "Claims go to https://intranet.example/leave.",  # the answer's last full stop
        "Use `mid = n//2` to halve the list [1].",  # floor division, not an address
        "int x = 1;// set by HR [1]",
    ],
)
def test_a_stated_address_before_punctuation_and_code_slashes_are_kept(text: str) -> None:
    """A sentence's comma or full stop after an address is not part of it (GFM's autolinks end
    before it too), and '//' after a word is code, not a protocol-relative address."""
    stated = "Leave is described at https://intranet.example/leave by HR."
    assert strip_unstated_addresses(text, stated) == (text, 0)


def test_trailing_punctuation_stays_when_an_unstated_address_goes() -> None:
    kept, removed = strip_unstated_addresses("Send it to https://c.example/?d=1. Done [1].", "")
    assert (kept, removed) == ("Send it to . Done [1].", 1)


@pytest.mark.parametrize(
    "text",
    [
        "Leave [1]. ![a [b] c](https://intranet.example/leave)",  # brackets inside the alt text
        "Leave [1]. ![a\nb](https://intranet.example/leave)",  # a line break inside it
        "Leave [1]. ![x](\nhttps://intranet.example/leave)",  # a line break before the address
    ],
)
def test_every_image_commonmark_renders_goes(text: str) -> None:
    """CommonMark renders each of these as an image fetched unasked: brackets and a line break
    are allowed in its description, a line break before its destination."""
    kept, removed = strip_unstated_addresses(text, "at https://intranet.example/leave by HR")
    assert "intranet.example" not in kept and "![" not in kept, kept
    assert removed == 1


def test_a_bare_www_address_no_source_states_goes() -> None:
    """GFM renders 'www.' text as a link (as it does 'https://'): an unstated one would carry
    what the LLM put in it to whoever follows it."""
    text = "Leave is 20 weeks, see www.collector.example/?d=20-weeks [1]."
    kept, removed = strip_unstated_addresses(text, "see www.intranet.example/leave")
    assert (kept, removed) == ("Leave is 20 weeks, see  [1].", 1)
    stated = "Leave is 20 weeks, see www.intranet.example/leave [1]."
    assert strip_unstated_addresses(stated, "see www.intranet.example/leave") == (stated, 0)


@pytest.mark.parametrize(
    "text",
    ["Leave is paid at full pay![1][2]", "Leave is paid at full pay![1](p. 3)"],
)
def test_an_exclamation_before_citation_markers_is_not_an_image(text: str) -> None:
    """'!' ending a sentence, then its markers: not an image with nothing to fetch, so the
    markers stay (removed, the sentence lost its citations and read 'full pay1')."""
    assert strip_unstated_addresses(text, "Leave is paid at full pay.") == (text, 0)


def test_a_list_of_sources_after_the_answer_is_not_a_link_definition() -> None:
    """'[1]: Parental Leave Policy, section 2' is text to a Markdown renderer (a definition's
    destination is one word, then at most a quoted title): it stays, and no note counts it."""
    text = (
        "Birth parents receive 20 weeks [1] and adoptive parents 16 weeks [2].\n\n"
        "[1]: Parental Leave Policy, section 2\n[2]: HR Adoption Guide, p. 4"
    )
    assert strip_unstated_addresses(text, "Birth parents receive 20 weeks.") == (text, 0)
    defined = "Leave [1].\n\n[1]: https://c.example/?d=1 'the policy'\n[2]: <https://c.example/x>"
    assert strip_unstated_addresses(defined, "") == ("Leave [1].\n\n\n", 2)
