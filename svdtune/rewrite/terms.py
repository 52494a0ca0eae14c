"""Words a rewrite must keep, the style terms it should add, and clean-up of prompts and outputs.

Content words are approximated as every word that is not a function word: nouns, colours and
counts ("two", "3") are kept, and so are adjectives and verbs, which is stricter than asked and
what users expect of a rewrite. A part-of-speech tagger would be finer, but nltk's and spaCy's
taggers need model downloads these machines cannot make, and sklearn's stop-word list drops
counts and positions ("two", "top").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every no
and or but nor so yet
of in on at to for from by with without about into onto over under above below between behind beside
near next through across along around against among upon within off out up down
is are was were be been being am has have had having do does did will would shall should can could may might must
it its they them their there here he she his her we our you your i me my
as than then very too just also only
""".split())
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def word_key(word: str) -> str:
    """One key for a word's singular and regular plural: a final s, then a final e, is dropped and
    a final y reads as i, so that circle/circles, horse/horses, dish/dishes, box/boxes,
    tomato/tomatoes, berry/berries and cookie/cookies each share a key. (Dropping "es" whole, as a
    suffix list would, breaks horses, shoes and roses.)"""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word[:-1] + "i" if word.endswith("y") else word


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> list[str]:
    """The words of `text` a faithful rewrite keeps, in order, one per key (a plural and its
    singular are one word)."""
    first: dict[str, str] = {}
    for w in words(text):
        if w not in FUNCTION_WORDS:
            first.setdefault(word_key(w), w)
    return list(first.values())


def missing_words(prompt: str, rewrite: str) -> list[str]:
    """Content words of `prompt` that `rewrite` lost, or has fewer times than the prompt (so
    "a blue cross and a blue cross" needs two crosses)."""
    asked, kept = (Counter(word_key(w) for w in words(t) if w not in FUNCTION_WORDS) for t in (prompt, rewrite))
    return [w for w in content_words(prompt) if kept[word_key(w)] < asked[word_key(w)]]


def style_terms(style_suffix: str) -> list[str]:
    """A domain's style terms: the comma-separated phrases of its style suffix."""
    return [t.strip().lower() for t in style_suffix.split(",") if t.strip()]


def has_style(text: str, terms: list[str]) -> bool:
    """Whether `text` carries the domain's style: at least one of its style terms, word for word."""
    flat = " ".join(words(text))
    return any(re.search(rf"\b{re.escape(' '.join(words(t)))}\b", flat) for t in terms)


def sanitize(prompt: str | bytes) -> tuple[str, list[str]]:
    """A prompt as clean text, and what was changed: undecodable bytes become U+FFFD, control and
    format characters become spaces, whitespace runs collapse."""
    notes = []
    if isinstance(prompt, bytes):
        text = prompt.decode("utf-8", errors="replace")
    else:  # command-line arguments carry undecodable bytes as surrogates (U+DC80..U+DCFF)
        try:
            text = prompt.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
        except UnicodeEncodeError:  # another lone surrogate (broken JSON, "\ud83d"): no byte it stands for
            text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in prompt)
    if "\ufffd" in text:
        notes.append("bytes that are not UTF-8 were replaced")
    control = {c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs") and c not in "\t\n\r"}
    if control:
        notes.append("control characters were removed")
    cleaned = "".join(" " if c in control else c for c in text)
    return " ".join(cleaned.split()), notes


_CHAT_RESIDUE = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?INST\]")
_LEAD_IN = re.compile(r"^(?:here(?:'s| is) (?:the |a |your )?(?:rewritten |new )?prompt\s*[:\-]?|"
                      r"(?:rewritten |new )?prompt\s*:|assistant\s*:)\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’«»"


def clean_output(text: str) -> str:
    """The generated rewrite as one prompt line: no chat tokens, lead-in, quotes or later lines."""
    text = _CHAT_RESIDUE.sub(" ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = _LEAD_IN.sub("", lines[0]) if lines else ""
    text = text.strip().strip(_QUOTES).strip()
    return " ".join(text.split())
