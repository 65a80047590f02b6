import math
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nli_tune.units.segment import (
    locate,
    normalise,
    sentence_spans,
    units_overlapping,
    window_spans,
)

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"

# Characters that exercise every rule: terminal punctuation, closers, line breaks, list
# markers, emoji (with ZWJ and variation selector), abbreviations' letters, odd whitespace.
REDDIT_CHARS = st.sampled_from(
    list("aZe.gDrU S1 .!?…\"”’')]-*\n\r\t\u00a0\u2028😭🙂❤\ufe0f\u200d/:=?")
)
WORD = st.sampled_from(
    ["I", "feel", "so", "tired", "Dr.", "e.g.", "3.5", "U.S.", "http://x.com/a.b?c=d", "😭😭"]
)
ENDING = st.sampled_from(["", ".", "...", "!!", "?!", "…", '."', "?)", " 😭"])
SEPARATOR = st.sampled_from([" ", "  ", "\n", "\n\n", "\r\n", "\n- ", "\n1. ", "\n2) ", "\t"])


@st.composite
def sentenceish(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        words = draw(st.lists(WORD, min_size=1, max_size=12))
        parts.append(" ".join(words) + draw(ENDING) + draw(SEPARATOR))
    return draw(st.sampled_from(["", " ", "\n"])) + "".join(parts)


TEXTS = st.one_of(st.text(), st.text(REDDIT_CHARS), sentenceish())


def _assert_partition(text: str, spans: list[tuple[int, int]]) -> None:
    if not text:
        assert spans == []
        return
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(s < e for s, e in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert "".join(text[s:e] for s, e in spans) == text


@settings(max_examples=200, deadline=None)
@given(text=TEXTS, max_words=st.integers(1, 12))
def test_sentence_spans_partition_the_text(text, max_words):
    spans = sentence_spans(text, max_words)
    _assert_partition(text, spans)
    assert spans == sentence_spans(text, max_words)
    for s, e in spans:
        assert len(text[s:e].split()) <= max_words
        # A line break ends its unit: only whitespace may follow it inside the unit (except
        # for the text's leading whitespace, which the first unit takes).
        body = text[s:e].lstrip()
        first_break = min((body.find(c) for c in LINE_BREAKS if c in body), default=-1)
        assert first_break < 0 or body[first_break:].isspace()
    if not text.isspace():
        assert not any(text[s:e].isspace() for s, e in spans)
        # Whitespace between units belongs to the unit before it.
        assert not any(text[s].isspace() for s, _ in spans[1:])


def _units(text: str, max_words: int = 64) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text, max_words)]


def test_empty_and_blank_texts():
    assert sentence_spans("") == []
    assert sentence_spans(" \n\n\t") == [(0, 4)]


def test_newlines_and_blank_lines_end_units():
    assert _units("\n  first line\nsecond\n\n\nthird  \r\nlast") == [
        "\n  first line\n",
        "second\n\n\n",
        "third  \r\n",
        "last",
    ]


def test_list_items_are_one_unit_each():
    assert _units("1. first\n2. second") == ["1. first\n", "2. second"]
    assert _units("Things:\n- eat\n* sleep\n  3) cry. A lot.") == [
        "Things:\n",
        "- eat\n",
        "* sleep\n  ",
        "3) cry. ",
        "A lot.",
    ]


def test_punctuation_runs_and_closing_quotes_end_sentences():
    assert _units("I feel bad... really bad!! Why?") == ["I feel bad... ", "really bad!! ", "Why?"]
    assert _units('He said "no." Then left?!) Ok… fine') == [
        'He said "no." ',
        "Then left?!) ",
        "Ok… ",
        "fine",
    ]


def test_urls_abbreviations_and_decimals_do_not_split():
    text = "see http://x.com/a.b?c=d for more. Slept 3.5 hours, e.g. this Dr. Who in the U.S. ok"
    assert _units(text) == [
        "see http://x.com/a.b?c=d for more. ",
        "Slept 3.5 hours, e.g. this Dr. Who in the U.S. ok",
    ]
    # A number ends a sentence when it does not open its line.
    assert _units("I woke at 5. Then slept") == ["I woke at 5. ", "Then slept"]


def test_emoji_do_not_crash_and_may_end_a_sentence():
    text = "so tired 😭😭 I can't ❤️ anymore 🙂"
    assert _units(text) == ["so tired 😭😭 ", "I can't ❤️ anymore 🙂"]
    # Punctuation or emoji alone never make a unit; they join the next one.
    assert _units("... 😭 Yes") == ["... 😭 Yes"]


def test_long_unpunctuated_text_is_cut_into_max_words_pieces():
    text = " ".join(f"w{i}" for i in range(2000))
    units = _units(text)
    assert len(units) == math.ceil(2000 / 64)
    assert "".join(units) == text
    assert [len(u.split()) for u in units] == [64] * 31 + [2000 - 31 * 64]
    assert units[0].endswith("w63 ") and units[1].startswith("w64 ")


def test_bad_max_words_raises():
    with pytest.raises(ValueError, match="max_words"):
        sentence_spans("a b", 0)


def test_segmentation_partitions_pathological_input():
    # No letters at all: every candidate cut is rejected and the text must still come back
    # whole. (How long it takes is the bench's business: `python -m nli_tune.bench`.)
    texts = ["! " * 50_000, "." * 100_000 + " x", " " * 100_000 + "a", "😭 " * 50_000]
    for text in texts:
        _assert_partition(text, sentence_spans(text))


def _sentences(lengths: list[int]) -> list[tuple[int, int]]:
    spans, pos = [], 0
    for n in lengths:
        spans.append((pos, pos + n))
        pos += n
    return spans


@pytest.mark.parametrize(
    ("n", "size", "stride", "windows"),
    [
        (7, 3, 2, [(0, 2), (2, 4), (4, 6)]),
        (8, 3, 2, [(0, 2), (2, 4), (4, 6), (5, 7)]),
        (2, 3, 1, [(0, 1)]),
        (4, 1, 1, [(0, 0), (1, 1), (2, 2), (3, 3)]),
        (5, 2, 2, [(0, 1), (2, 3), (3, 4)]),
    ],
)
def test_window_spans_hand_cases(n, size, stride, windows):
    sentences = _sentences([10] * n)
    expected = [(sentences[a][0], sentences[b][1]) for a, b in windows]
    assert window_spans(sentences, size, stride) == expected


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 20), max_size=30),
    size=st.integers(1, 6),
    data=st.data(),
)
def test_windows_cover_every_character_on_sentence_boundaries(lengths, size, data):
    stride = data.draw(st.integers(1, size))
    sentences = _sentences(lengths)
    windows = window_spans(sentences, size, stride)
    if not sentences:
        assert windows == []
        return
    starts = {s for s, _ in sentences}
    ends = {e for _, e in sentences}
    assert all(s in starts and e in ends for s, e in windows)
    assert len(set(windows)) == len(windows)
    assert all(sum(s <= a and b <= e for a, b in sentences) <= size for s, e in windows)
    covered = set()
    for s, e in windows:
        covered.update(range(s, e))
    assert covered == set(range(sentences[-1][1]))


@pytest.mark.parametrize(("size", "stride", "bad"), [(0, 1, "size"), (2, 0, "stride"), (2, 3, "3")])
def test_window_spans_rejects_bad_size_or_stride(size, stride, bad):
    with pytest.raises(ValueError, match=bad):
        window_spans([(0, 1)], size, stride)


def test_normalise_hand_case():
    text = "  “I’m   FINE”\t—  really…  "
    normal, origin = normalise(text)
    assert normal == '"i\'m fine" - really...'
    assert [text[i] for i in origin[:4]] == ["“", "I", "’", "m"]
    assert text[origin[-1]] == "…" and origin[-3:] == [len(text) - 3] * 3


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), st.text(REDDIT_CHARS)))
def test_normalise_maps_each_character_to_its_origin(text):
    normal, origin = normalise(text)
    assert len(normal) == len(origin)
    assert normal == normal.strip() and "  " not in normal
    assert origin == sorted(origin) and all(0 <= i < len(text) for i in origin)
    for char, i in zip(normal, origin, strict=True):
        source = text[i]
        if char == " ":
            assert source.isspace() or any(
                c.isspace() for c in unicodedata.normalize("NFKC", source)
            )
        else:
            assert char in normalise(source)[0]


POST = "Intro line.\nI said “I’m   done” and LEFT.  Then… nothing matters anymore\nbye"


def test_locate_exact_match():
    span = locate(POST, "  Intro line.\n")
    assert span == (0, len("Intro line."))
    assert locate("a b a b", "b") == (2, 3)  # the first occurrence


@pytest.mark.parametrize(
    "sentence",
    ['I said "i\'m done" and left.', "i SAID “I’M DONE”\nAND left.", "Then... nothing matters"],
)
def test_locate_ignores_quotes_whitespace_and_case(sentence):
    s, e = locate(POST, sentence)
    assert normalise(POST[s:e])[0] == normalise(sentence)[0]


def test_locate_ignores_missing_trailing_punctuation():
    s, e = locate(POST, "Nothing matters anymore!”")
    assert POST[s:e] == "nothing matters anymore"


def test_locate_returns_none_when_absent():
    assert locate(POST, "I feel great.") is None
    assert locate(POST, "   ") is None
    assert locate(POST, "?!") is None


@settings(max_examples=200, deadline=None)
@given(text=sentenceish(), data=st.data())
def test_locate_finds_every_substring(text, data):
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, len(text)))
    needle = text[a:b].strip()
    span = locate(text, text[a:b])
    if needle:
        assert span is not None and text[span[0] : span[1]] == needle
        assert span[0] <= a + len(text[a:b]) - len(text[a:b].lstrip())
    else:
        assert span is None


def test_units_overlapping():
    units = [(0, 5), (5, 10), (10, 15)]
    assert units_overlapping(units, (4, 11)) == [0, 1, 2]
    assert units_overlapping(units, (5, 10)) == [1]
    assert units_overlapping(units, (9, 10)) == [1]
    assert units_overlapping(units, (5, 5)) == []
    assert units_overlapping(units, (14, 30)) == [2]
    assert units_overlapping(units, (15, 30)) == []
