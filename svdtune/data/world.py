"""The reference world: procedural captioned scenes that the shipped model family is trained on.

A scene holds 1-3 objects on a 3x3 grid of cells. Each object has a shape, a colour, a size and a
cell; the whole scene is drawn in one style. The plain style is the base training distribution;
the other styles are the domains that adapters learn. Everything is deterministic given a seed,
and images are rendered analytically (signed distance functions with one-pixel anti-aliasing), so
the same scene always gives the same pixels.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

import numpy as np

IMAGE_SIZE = 48
GRID = 3
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.65, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.20, 0.80),
    "orange": (1.00, 0.55, 0.05),
}
SIZES = ("small", "large")
# Cells in reading order; the phrase is how captions name the cell.
POSITIONS = (
    ("top left", "at the top left"), ("top", "at the top"), ("top right", "at the top right"),
    ("left", "on the left"), ("center", "in the center"), ("right", "on the right"),
    ("bottom left", "at the bottom left"), ("bottom", "at the bottom"),
    ("bottom right", "at the bottom right"),
)
POSITION_NAMES = tuple(name for name, _ in POSITIONS)
# Style -> how a detailed caption describes the look. "plain" is the base distribution.
STYLES = {
    "plain": "on a white background",
    "pastel": "in soft pastel colours on a cream background",
    "neon": "as glowing neon outlines on a black background",
    "striped": "with diagonal stripes on a white background",
    "blueprint": "as a blueprint drawing on a blue grid background",
}
# (colour, shape) pairs never shown to the reference models in training: a test of composition.
HELD_OUT = frozenset({("red", "triangle"), ("green", "cross"), ("blue", "circle"), ("yellow", "square")})
NUMBER_PROBS = {1: 0.4, 2: 0.35, 3: 0.25}
HALF_EXTENT = {"small": 3.6, "large": 5.8}  # pixels, for a 16-pixel cell
MAX_JITTER = {"small": 2.5, "large": 1.0}

_CELL = IMAGE_SIZE / GRID


@dataclass(frozen=True)
class WorldObject:
    shape: str
    colour: str
    size: str
    cell: int  # 0..8, reading order
    dx: float = 0.0  # jitter in pixels
    dy: float = 0.0

    @property
    def position(self) -> str:
        return POSITION_NAMES[self.cell]

    def phrase(self, detailed: bool) -> str:
        if not detailed:
            return f"{_article(self.colour)} {self.colour} {self.shape}"
        return f"a {self.size} {self.colour} {self.shape} {POSITIONS[self.cell][1]}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[WorldObject, ...]
    style: str = "plain"
    caption_order: tuple[int, ...] = field(default=())  # order objects are named in captions

    def _ordered(self) -> list[WorldObject]:
        order = self.caption_order or tuple(range(len(self.objects)))
        return [self.objects[i] for i in order]

    def short_caption(self) -> str:
        return _join([o.phrase(False) for o in self._ordered()])

    def detailed_caption(self) -> str:
        return f"{_join([o.phrase(True) for o in self._ordered()])}, {STYLES[self.style]}"

    def labels(self) -> dict:
        return {"style": self.style, "objects": [asdict(o) | {"position": o.position} for o in self.objects]}

    @property
    def has_held_out(self) -> bool:
        return any((o.colour, o.shape) in HELD_OUT for o in self.objects)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def sample_scene(
    rng: random.Random,
    style: str = "plain",
    n_objects: int | None = None,
    held_out: str = "exclude",
) -> Scene:
    """Draw one scene. held_out: "exclude" (training), "only" (at least one held-out pair), "any"."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; expected one of {sorted(STYLES)}")
    if held_out not in ("exclude", "only", "any"):
        raise ValueError(f"held_out must be 'exclude', 'only' or 'any', got {held_out!r}")
    n = n_objects or rng.choices(list(NUMBER_PROBS), weights=list(NUMBER_PROBS.values()))[0]
    while True:
        cells = rng.sample(range(GRID * GRID), n)
        objects = []
        for cell in cells:
            size = rng.choice(SIZES)
            j = MAX_JITTER[size]
            objects.append(WorldObject(
                shape=rng.choice(SHAPES), colour=rng.choice(list(COLOURS)), size=size, cell=cell,
                dx=round(rng.uniform(-j, j), 2), dy=round(rng.uniform(-j, j), 2),
            ))
        order = list(range(n))
        rng.shuffle(order)
        scene = Scene(tuple(objects), style, tuple(order))
        if held_out == "any" or (held_out == "only") == scene.has_held_out:
            return scene


def scene_rng(seed: int, index: int) -> random.Random:
    """Independent, reproducible random stream for scene `index` of a run seeded with `seed`."""
    return random.Random(seed * 1_000_003 + index)


# ---------------------------------------------------------------- rendering

_ys, _xs = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5


def _sdf(shape: str, px: np.ndarray, py: np.ndarray, r: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) for a shape of half-extent r at the origin."""
    if shape == "circle":
        return np.hypot(px, py) - r
    if shape == "square":
        return _box(px, py, 0.86 * r, 0.86 * r)
    if shape == "cross":
        return np.minimum(_box(px, py, r, 0.36 * r), _box(px, py, 0.36 * r, r))
    if shape == "triangle":  # equilateral, pointing up, centred on its centroid
        k = np.sqrt(3.0)
        s = r
        py = py - s / (2 * k)  # centre the bounding box rather than the centroid
        x, y = np.abs(px) - s, -py + s / k
        flip = x + k * y > 0
        x, y = np.where(flip, (x - k * y) / 2, x), np.where(flip, (-k * x - y) / 2, y)
        x = x - np.clip(x, -2 * s, 0)
        return -np.hypot(x, y) * np.sign(y)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _box(px, py, hx, hy):
    qx, qy = np.abs(px) - hx, np.abs(py) - hy
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0)


def _cover(d: np.ndarray, softness: float = 1.0) -> np.ndarray:
    return np.clip(0.5 - d / softness, 0.0, 1.0)[..., None]


def _background(style: str) -> np.ndarray:
    img = np.ones((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    if style == "pastel":
        img[:] = (0.99, 0.95, 0.86)
    elif style == "neon":
        img[:] = (0.04, 0.04, 0.09)
    elif style == "blueprint":
        img[:] = (0.11, 0.22, 0.48)
        grid = ((_xs.astype(int) % 8 == 0) | (_ys.astype(int) % 8 == 0))[..., None]
        img = np.where(grid, np.float32((0.24, 0.37, 0.64)), img)
    return img


def render(scene: Scene) -> np.ndarray:
    """Render a scene as an HxWx3 float32 array in [0, 1]."""
    img = _background(scene.style)
    white = np.ones(3, np.float32)
    for o in scene.objects:
        row, col = divmod(o.cell, GRID)
        cx, cy = (col + 0.5) * _CELL + o.dx, (row + 0.5) * _CELL + o.dy
        d = _sdf(o.shape, _xs - cx, _ys - cy, HALF_EXTENT[o.size])
        c = np.asarray(COLOURS[o.colour], np.float32)
        if scene.style == "plain":
            img = img * (1 - _cover(d)) + c * _cover(d)
        elif scene.style == "pastel":
            fill, edge = 0.55 * c + 0.45 * white, 0.8 * c + 0.2 * white
            a = _cover(d, 1.8)
            img = img * (1 - a) + (fill * _cover(d + 1.2) + edge * (1 - _cover(d + 1.2))) * a
        elif scene.style == "neon":
            ring = _cover(np.abs(d) - 0.8)
            glow = np.exp(-np.maximum(np.abs(d) - 0.8, 0) / 1.6)[..., None] * 0.55
            inside = _cover(d) * 0.18
            img = np.clip(img + c * (glow + inside) + (0.7 * c + 0.3 * white - img) * ring, 0, 1)
        elif scene.style == "striped":
            stripe = (np.sin((_xs + _ys) * (np.pi / 2.0)) > 0)[..., None]
            fill = np.where(stripe, c, 0.3 * c + 0.7 * white)
            edge = _cover(np.abs(d) - 0.6)
            a = _cover(d)
            img = img * (1 - a) + fill * a
            img = img * (1 - edge) + c * edge
        elif scene.style == "blueprint":
            a, edge = _cover(d), _cover(np.abs(d) - 0.6)
            img = img * (1 - a) + (0.85 * c + 0.15 * white) * a
            img = img * (1 - edge) + white * edge
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """Render scenes as an Nx3xHxW float32 array in [0, 1] (the layout torch models take)."""
    return np.stack([render(s) for s in scenes]).transpose(0, 3, 1, 2).copy()


# ---------------------------------------------------------------- prompts

_WORD = re.compile(r"[a-z]+")
VOCABULARY = frozenset(
    _WORD.findall(" ".join([*SHAPES, *COLOURS, *SIZES, *(p for _, p in POSITIONS), *STYLES, *STYLES.values()]))
    + ["a", "an", "and", "with", "one", "two", "three", "colour", "color"]
)
_PLURAL = {f"{s}s": s for s in SHAPES} | {"crosses": "cross"}


def unknown_words(prompt: str) -> list[str]:
    """Words of `prompt` that the world has never seen (generation still runs; callers warn)."""
    return [w for w in _WORD.findall(prompt.lower()) if w not in VOCABULARY and w not in _PLURAL]


_OBJECT_PHRASE = re.compile(
    r"\b(?:(small|large)\s+)?(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")\b"
    r"(?:\s+(" + "|".join(sorted((re.escape(p) for _, p in POSITIONS), key=len, reverse=True)) + r"))?"
)


def parse_prompt(prompt: str) -> list[dict]:
    """Objects a prompt asks for: [{"shape", "colour", "size"?, "position"?}], in prompt order.

    Each object phrase is "a [size] colour shape [position phrase]"; parts the prompt leaves out
    are absent from its dict (and not checked when scoring).
    """
    objects = []
    phrase_to_name = {p: n for n, p in POSITIONS}
    for size, colour, shape, pos in _OBJECT_PHRASE.findall(prompt.lower()):
        obj = {"shape": shape, "colour": colour}
        if size:
            obj["size"] = size
        if pos:
            obj["position"] = phrase_to_name[pos]
        objects.append(obj)
    return objects


def prompt_style(prompt: str) -> str | None:
    """The style a prompt names through its style phrase, or None."""
    text = prompt.lower()
    # Longest phrase first: "with diagonal stripes on a white background" contains plain's phrase.
    for style, phrase in sorted(STYLES.items(), key=lambda kv: -len(kv[1])):
        if phrase in text:
            return style
    return None
