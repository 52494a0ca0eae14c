"""The reference world as a caption source: `n` scenes per style, plain and styled.

Images are not stored: `image` is the address `world://<style>/<seed>/<index>`, which
`render_address` turns back into pixels (scenes are deterministic given seed and index).
Short caption = the plain object list; long caption = the detailed caption with the style phrase;
category = the style; labels = the colours and shapes in the scene.
"""

from __future__ import annotations

import re

import datasets
import numpy as np

from svdtune.data.records import Columns, SkipLog
from svdtune.data.world import STYLES, render, sample_scene, scene_rng

_ADDRESS = re.compile(r"world://([a-z]+)/(\d+)/(\d+)$")


def world_scene(style: str, seed: int, index: int):
    # Each style draws from its own stream, so that styles do not share layouts.
    return sample_scene(scene_rng(seed * 10 + list(STYLES).index(style), index), style=style)


def read_world(n_per_style: int = 1000, styles: tuple[str, ...] = tuple(STYLES), seed: int = 0,
               skips: SkipLog | None = None) -> datasets.Dataset:
    out = Columns()
    for style in styles:
        for i in range(n_per_style):
            scene = world_scene(style, seed, i)
            labels = sorted({o.colour for o in scene.objects} | {o.shape for o in scene.objects})
            out.add(f"world:{style}:{seed}:{i}", "world", scene.short_caption(), f"world://{style}/{seed}/{i}",
                    long_caption=scene.detailed_caption(), category=style, labels=labels)
    return out.dataset()


def render_address(address: str) -> np.ndarray:
    """HxWx3 float32 pixels in [0, 1] for a `world://style/seed/index` address."""
    m = _ADDRESS.match(address)
    if not m or m.group(1) not in STYLES:
        raise ValueError(f"{address!r} is not a world image address (world://<style>/<seed>/<index>)")
    return render(world_scene(m.group(1), int(m.group(2)), int(m.group(3))))
