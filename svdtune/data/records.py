"""The one record every source yields, and the log of records a reader had to skip.

A record is a row of a `datasets.Dataset` with FEATURES: id (source-prefixed, unique), source,
image (a file path, or a `world://style/seed/index` address rendered on demand; "" when the
source has no image), short_caption, long_caption ("" when the source has none), category
("" when none) and labels (free-form tags such as DCI mask labels or world attributes).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import datasets

from svdtune.errors import UserError

log = logging.getLogger("svdtune")

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "source": datasets.Value("string"),
    "image": datasets.Value("string"),
    "short_caption": datasets.Value("string"),
    "long_caption": datasets.Value("string"),
    "category": datasets.Value("string"),
    "labels": datasets.Sequence(datasets.Value("string")),
})
COLUMNS = tuple(FEATURES)


def clean_caption(value) -> tuple[str, str]:
    """(caption as one line of text, "") or ("", why it is not usable)."""
    if value is None:
        return "", "missing caption"
    if not isinstance(value, str):
        return "", f"caption is not text ({type(value).__name__})"
    text = " ".join(value.split())
    if not text:
        return "", "empty caption"
    if _SURROGATE.search(text):  # bytes that were not UTF-8 (see read_json)
        return "", "caption has non-UTF-8 bytes"
    return text, ""


_SURROGATE = re.compile("[\udc80-\udcff]")


def read_json(path: Path, what: str):
    """Parse a JSON file. Non-UTF-8 bytes survive as lone surrogates so that the one caption holding
    them is skipped (by clean_caption) instead of the whole file; broken JSON stops with the file
    and line named."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        raise BadFile(f"{what} file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise BadFile(f"{what}: {str(path)!r} is a folder; expected a JSON file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadFile(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}); expected {what}") from None


class BadFile(UserError):
    """A file that cannot be read at all: missing, a folder, not JSON, not the expected schema."""


class SkipLog:
    """Counts records skipped per reason; warns with the file and record id of the first few."""

    def __init__(self, warn_first: int = 3):
        self.counts: Counter[str] = Counter()
        self.warn_first = warn_first

    def skip(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if self.counts[reason] <= self.warn_first:
            more = " (further ones are counted in the report)" if self.counts[reason] == self.warn_first else ""
            log.warning("skipped %s: %s%s", where, reason, more)

    def add(self, counts: dict[str, int]) -> None:
        self.counts.update(counts)

    def total(self) -> int:
        return sum(self.counts.values())


class Columns:
    """Column-wise builder: appending to seven lists is what keeps 600k records fast to read."""

    def __init__(self):
        self.data = {c: [] for c in COLUMNS}

    def add(self, id: str, source: str, short_caption: str, image: str = "", long_caption: str = "",
            category: str = "", labels: list[str] | None = None) -> None:
        d = self.data
        d["id"].append(id)
        d["source"].append(source)
        d["image"].append(image)
        d["short_caption"].append(short_caption)
        d["long_caption"].append(long_caption)
        d["category"].append(category)
        d["labels"].append(labels or [])

    def __len__(self) -> int:
        return len(self.data["id"])

    def dataset(self) -> datasets.Dataset:
        return datasets.Dataset.from_dict(self.data, features=FEATURES)
