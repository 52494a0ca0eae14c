"""Prompt sets for `svdtune eval`, each with the images its prompts describe when there are any.

    single | suite:two ...   a world prompt suite (world_bench.SUITES); reference = rendered scenes
    domain:neon              fresh scenes of a world style (its validation captions; style accuracy)
    file:prompts.txt         one prompt per line; no reference images
    data:runs/data/food      the validation captions of a `svdtune data build` output, with its images

Suites and domains are drawn from seeds far from the training scenes, so they are validation sets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from svdtune.data import world
from svdtune.errors import UserError
from svdtune.eval.world_bench import EVAL_SEED, SUITES, prompt_suite, render_scenes

KINDS = ("suite", "domain", "file", "data")
FORMS = "a suite (" + ", ".join(SUITES) + "), domain:STYLE, file:PATH or data:DIR"
REFERENCE_SIDE = 256  # data images of mixed sizes are centre-cropped and resized to this square


@dataclass
class PromptSet:
    name: str                 # unique, used as a key in results.json and in tables
    spec: str                 # as given in the config
    kind: str                 # one of KINDS
    prompts: list[str]
    reference: np.ndarray | None = None  # N x H x W x 3 in [0, 1]: what the prompts describe
    resample: Callable[[], np.ndarray] | None = field(default=None, repr=False)  # an independent draw

    @property
    def reference_source(self) -> str | None:
        if self.reference is None:
            return None
        return "data images" if self.kind == "data" else "rendered scenes"

    @property
    def is_world(self) -> bool:
        """Every prompt uses only the reference world's words (alignment can be scored)."""
        return all(not world.unknown_words(p) and world.parse_prompt(p) for p in self.prompts)


def parse(spec: str, n: int) -> PromptSet:
    """One prompt set from its spec; `n` prompts at most (all of a file or data split if n = 0)."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        kind, arg = ("suite", spec) if spec in SUITES else ("", spec)
    if kind == "suite":
        if arg not in SUITES:
            raise UserError(f"prompts: {spec!r} names no prompt suite; expected {FORMS}")
        return _suite(spec, arg, n or 16)
    if kind == "domain":
        if arg not in world.STYLES:
            raise UserError(f"prompts: {spec!r}: {arg!r} is not a world style; expected one of {', '.join(world.STYLES)}")
        return _domain(spec, arg, n or 16)
    if kind == "file":
        return _file(spec, Path(arg), n)
    if kind == "data":
        return _data(spec, Path(arg), n)
    raise UserError(f"prompts: {spec!r} is not a prompt set; expected {FORMS}")


def parse_all(specs: list[str], n: int) -> list[PromptSet]:
    sets = [parse(s, n) for s in specs]
    names = [s.name for s in sets]
    dup = next((x for x in names if names.count(x) > 1), None)
    if dup:
        raise UserError(f"prompts: the set {dup!r} is listed twice")
    return sets


def _suite(spec: str, name: str, n: int) -> PromptSet:
    scenes = prompt_suite(name, n)
    return PromptSet(name, spec, "suite", [s.detailed_caption() for s in scenes], render_scenes(scenes),
                     lambda: render_scenes(prompt_suite(name, n, seed=EVAL_SEED + 1)))


def domain_scenes(style: str, n: int, seed: int = EVAL_SEED) -> list[world.Scene]:
    rng = random.Random(f"{seed}-domain-{style}")
    return [world.sample_scene(rng, style=style) for _ in range(n)]


def _domain(spec: str, style: str, n: int) -> PromptSet:
    scenes = domain_scenes(style, n)
    return PromptSet(f"domain {style}", spec, "domain", [s.detailed_caption() for s in scenes],
                     render_scenes(scenes), lambda: render_scenes(domain_scenes(style, n, EVAL_SEED + 1)))


def _file(spec: str, path: Path, n: int) -> PromptSet:
    if not path.is_file():
        raise UserError(f"prompts: {spec!r}: the prompt file {str(path)!r} does not exist")
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise UserError(f"prompts: {spec!r}: {str(path)!r} has no prompts (expected one per line)")
    return PromptSet(f"file {path.name}", spec, "file", lines[:n] if n else lines)


def _data(spec: str, path: Path, n: int) -> PromptSet:
    from svdtune.data.images import load_image
    from svdtune.train.domain_data import captions_of, load_subset

    rows = load_subset(path, "val")
    if len(rows) == 0:
        raise UserError(f"prompts: {spec!r}: the validation split of {str(path)!r} is empty")
    rows = rows.select(range(min(n, len(rows)) if n else len(rows)))
    images = [load_image(a) for a in rows["image"]]
    return PromptSet(f"data {path.name}", spec, "data", captions_of(rows), _stack(images))


def _stack(images) -> np.ndarray:
    """PIL images as one N x H x W x 3 array: as they are when all have one size, else squares."""
    from PIL import Image

    if len({im.size for im in images}) > 1:
        squared = []
        for im in images:
            s = min(im.size)
            left, top = (im.width - s) // 2, (im.height - s) // 2
            squared.append(im.crop((left, top, left + s, top + s)).resize((REFERENCE_SIDE,) * 2, Image.Resampling.BICUBIC))
        images = squared
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255 for im in images])
