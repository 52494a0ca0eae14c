"""Readers, one file per source, all yielding the records of `svdtune.data.records`.

`read_source(name, location)` picks the reader by the part of `name` before any "-", so several
sources of one kind can be read side by side (`coco-2014=...`, `coco-2017=...`). For the world,
`location` is the number of scenes per style.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from svdtune.data.records import SkipLog
from svdtune.data.sources.coco import read_coco
from svdtune.data.sources.dci import read_dci
from svdtune.data.sources.generic import GenericColumns, read_generic
from svdtune.data.sources.mjhq import read_mjhq
from svdtune.data.sources.world import read_world, render_address
from svdtune.errors import UserError

KINDS = ("coco", "mjhq", "dci", "generic", "world")
# Kinds whose every record is a distinct image by construction: the world renders a fresh scene per
# record, so two scenes that share a caption (one object of 432 possible, told apart by jitter)
# are both training data, not a repeat. Caption deduplication leaves them alone.
DISTINCT_IMAGES = ("world",)

__all__ = ["DISTINCT_IMAGES", "KINDS", "GenericColumns", "read_source", "render_address", "source_kind"]


def source_kind(name: str) -> str:
    """`coco-2017` -> `coco`: the reader a source name selects."""
    return name.split("-")[0]


def read_source(name: str, location: str, skips: SkipLog, columns: GenericColumns | None = None,
                seed: int = 0) -> datasets.Dataset:
    kind = source_kind(name)
    if kind == "coco":
        return read_coco(Path(location), skips)
    if kind == "mjhq":
        return read_mjhq(Path(location), skips)
    if kind == "dci":
        return read_dci(Path(location), skips)
    if kind == "generic":
        return read_generic(location, skips, columns, name=name)
    if kind == "world":
        try:
            n = int(location or 1000)
        except ValueError:
            raise UserError(f"source {name}={location!r}: expected the number of scenes per style") from None
        return read_world(n, seed=seed)
    raise UserError(f"source {name!r}: unknown kind {kind!r}; expected one of {', '.join(KINDS)} "
                    "(optionally followed by -suffix)")
