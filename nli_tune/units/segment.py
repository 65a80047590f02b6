"""Units of a post: sentence and window spans, plus locating annotated evidence sentences.

The model scores each *unit* of a post (a sentence, or a window of consecutive sentences)
against a criterion, so segmentation must be deterministic and keep character offsets.
`sentence_spans` partitions the text: every character lies in exactly one span, and the
whitespace between two sentences belongs to the one before it. `locate` finds an annotated
evidence sentence in its post even when quotes, dashes, case or whitespace differ, and
`units_overlapping` tells which units hold it.

Only the standard library is used, so this module is cheap to import anywhere.
"""

from __future__ import annotations

import re
import unicodedata

Span = tuple[int, int]  # [start, end) character offsets into the post text

# Every character str.splitlines() breaks on: any of them ends a unit.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
_SPACE_RUN = re.compile(r"\s*")
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\S+\s*")  # a word and the whitespace after it
_WORD_CHAR = re.compile(r"[^\W_]")  # a letter or digit

# Sentence-final punctuation and the closing quotes/brackets that may follow it. It must be
# followed by whitespace, so URLs, decimals and "e.g.x" never split. The look-behind makes a
# match start only at the beginning of a run, and the possessive quantifiers keep a long run
# of dots from backtracking: both keep the scan linear.
_TERMINAL = re.compile(r"(?<![.!?…])([.!?…]++)[\"”’')\]]*+(?=\s)")

# Redditors often end a sentence with emoji instead of a full stop. An emoji run ends one
# only when whitespace and a capital letter follow ("so tired 😭😭 I can't").
_EMOJI = "\u2600-\u27bf\U0001f000-\U0001faff"
_EMOJI_RUN = re.compile(f"(?<![{_EMOJI}])[{_EMOJI}][{_EMOJI}\u200d\ufe0f]*+(?=\\s)")

# Words whose full stop rarely ends a sentence (compared casefolded, without the stop).
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc e.g i.e u.s u.k a.m p.m approx cf al".split()
)
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")  # "U.S", "e.g", "a.m"


def sentence_spans(text: str, max_words: int = 64) -> list[Span]:
    """Sentence units partitioning `text`, each with at most `max_words` words.

    A unit ends after sentence-final punctuation followed by whitespace, at every line break,
    and after an emoji run followed by a capital letter; the whitespace after the break stays
    with the unit it ends. Longer units are cut at whitespace into pieces of `max_words` words.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    if not text:
        return []
    if text.isspace():
        return [(0, len(text))]
    bounds = [0, *_unit_cuts(text), len(text)]
    spans: list[Span] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        spans.extend(_cap_words(text, start, end, max_words))
    return spans


def _unit_cuts(text: str) -> list[int]:
    """Sorted offsets where one unit ends and the next begins (never 0 or len(text))."""
    # (cut, needs_word): a line break needs only non-whitespace in its unit; punctuation and
    # emoji need a letter or digit, so "... I think" or a lone "😭 " never become units.
    candidates = [
        (run.end(), False)
        for run in _WHITESPACE.finditer(text)
        if not _LINE_BREAKS.isdisjoint(run[0])
    ]
    for match in _TERMINAL.finditer(text):
        if not _keeps_sentence_going(text, match):
            candidates.append((_SPACE_RUN.match(text, match.end()).end(), True))
    for match in _EMOJI_RUN.finditer(text):
        cut = _SPACE_RUN.match(text, match.end()).end()
        if cut < len(text) and text[cut].isupper():
            candidates.append((cut, True))

    cuts: list[int] = []
    last = 0
    no_word_until = 0  # text[last:no_word_until] is known to hold no letter or digit
    for cut, needs_word in sorted(candidates):
        if cut <= last or cut >= len(text):
            continue
        if needs_word:
            # Resume the scan where the last one stopped, so rejected cuts cost nothing extra.
            if _WORD_CHAR.search(text, no_word_until, cut) is None:
                no_word_until = cut
                continue
        elif _SPACE_RUN.match(text, last).end() >= cut:
            continue  # leading whitespace of the text joins the first unit
        cuts.append(cut)
        last = no_word_until = cut
    return cuts


def _keeps_sentence_going(text: str, match: re.Match[str]) -> bool:
    """Whether a single full stop belongs to an abbreviation or a list marker ("1. item")."""
    if match[1] != ".":
        return False
    start = match.start()
    word_start = start
    while word_start > 0 and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start:start]
    if word.isascii() and word.isdigit() and len(word) <= 3:
        # A number opening its line is a list marker; elsewhere "at 5. Then" ends a sentence.
        before = word_start
        while before > 0 and text[before - 1].isspace() and text[before - 1] not in _LINE_BREAKS:
            before -= 1
        return before == 0 or text[before - 1] in _LINE_BREAKS
    word = word.lstrip("\"“‘'([").casefold()
    return word in _ABBREVIATIONS or _INITIALISM.fullmatch(word) is not None


def _cap_words(text: str, start: int, end: int, max_words: int) -> list[Span]:
    """Cut text[start:end] before every `max_words`-th word; whitespace stays with the piece."""
    words = list(_WORD.finditer(text, start, end))
    if len(words) <= max_words:
        return [(start, end)]
    bounds = [start, *(words[i].start() for i in range(max_words, len(words), max_words)), end]
    return list(zip(bounds, bounds[1:], strict=False))


def window_spans(sentences: list[Span], size: int, stride: int) -> list[Span]:
    """Spans of `size` consecutive sentences starting every `stride` sentences.

    When the regular windows stop short of the last sentence, one more window of `size`
    sentences (fewer if the post has fewer) ends at it, so the windows cover every character.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if not 1 <= stride <= size:
        raise ValueError(f"stride must be between 1 and size={size}, got {stride}")
    n = len(sentences)
    if n == 0:
        return []
    starts = list(range(0, max(n - size, 0) + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return [(sentences[s][0], sentences[min(s + size, n) - 1][1]) for s in starts]


# Typographic variants annotators and posters mix freely; NFKC leaves these alone.
_PUNCTUATION = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "‛": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "‟": '"',
        "–": "-",
        "—": "-",
        "‒": "-",
        "―": "-",
        "…": "...",
    }
)


def normalise(text: str) -> tuple[str, list[int]]:
    """A casefolded, NFKC, plain-punctuation, single-spaced form of `text`, and its origins.

    The list gives, for each character of the normal form, the index in `text` of the
    character it came from; a collapsed space maps to the first whitespace of its run.
    Normalisation is per character, so a decomposed "e" + accent stays two characters.
    """
    out: list[str] = []
    origin: list[int] = []
    space_from = -1  # index of the first whitespace since the last kept character, if any
    for i, char in enumerate(text):
        expanded = unicodedata.normalize("NFKC", char).translate(_PUNCTUATION).casefold()
        for piece in expanded:
            if piece.isspace():
                if space_from < 0:
                    space_from = i
                continue
            if space_from >= 0 and out:
                out.append(" ")
                origin.append(space_from)
            space_from = -1
            out.append(piece)
            origin.append(i)
    return "".join(out), origin


_TRAILING = ".!?\"' "  # sentence-final punctuation and quotes, in their normal form


def locate(text: str, sentence: str) -> Span | None:
    """Span of the first occurrence of `sentence` in `text`, or None.

    Tries, in order: the stripped sentence verbatim; its normal form (see `normalise`) in the
    text's; and that normal form without trailing punctuation and quotes.
    """
    needle = sentence.strip()
    if not needle:
        return None
    found = text.find(needle)
    if found >= 0:
        return (found, found + len(needle))
    haystack, origin = normalise(text)
    normal, _ = normalise(needle)
    for form in (normal, normal.rstrip(_TRAILING)):
        found = haystack.find(form) if form else -1
        if found >= 0:
            return (origin[found], origin[found + len(form) - 1] + 1)
    return None


def units_overlapping(units: list[Span], span: Span) -> list[int]:
    """Indices, in order, of the units sharing at least one character with `span`."""
    start, end = span
    return [k for k, (s, e) in enumerate(units) if s < end and start < e]
