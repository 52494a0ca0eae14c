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

__all__ = ["KINDS", "GenericColumns", "read_source", "render_address"]


def read_source(name: str, location: str, skips: SkipLog, columns: GenericColumns | None = None,
                seed: int = 0) -> datasets.Dataset:
    kind = name.split("-")[0]
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
