"""Image grids with captions, written as PNG."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def image_grid(images: np.ndarray, captions: list[str] | None = None, ncols: int = 8, scale: int = 2,
               caption_lines: int = 3) -> Image.Image:
    """images: NxHxWx3 floats in [0, 1]; captions are wrapped under each tile."""
    n, h, w, _ = images.shape
    tile_w, tile_h = w * scale, h * scale
    font = ImageFont.load_default()
    line_h = 11 if captions else 0
    cap_h = line_h * caption_lines + 4 if captions else 0
    rows = (n + ncols - 1) // ncols
    canvas = Image.new("RGB", (ncols * (tile_w + 4), rows * (tile_h + cap_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    chars = max(8, tile_w // 6)
    for i in range(n):
        r, c = divmod(i, ncols)
        x, y = c * (tile_w + 4) + 2, r * (tile_h + cap_h + 4) + 2
        tile = Image.fromarray((np.clip(images[i], 0, 1) * 255).round().astype(np.uint8))
        canvas.paste(tile.resize((tile_w, tile_h), Image.NEAREST), (x, y))
        if captions:
            for j, line in enumerate(textwrap.wrap(captions[i], chars)[:caption_lines]):
                draw.text((x, y + tile_h + 2 + j * line_h), line, fill="black", font=font)
    return canvas


def save_grid(path: str | Path, images: np.ndarray, captions: list[str] | None = None, **kw) -> Path:
    return save_image(path, image_grid(images, captions, **kw))


def comparison_grid(columns: list[np.ndarray], labels: list[str], row_captions: list[str], tile: int = 144,
                    caption_width: int = 220) -> Image.Image:
    """One row per prompt (its caption on the left), one column per model (its label on top), every
    image shown as a `tile` x `tile` square. columns: one N x H x W x 3 array in [0, 1] per model,
    rows in the same prompt order."""
    n = len(columns[0])
    tile_w = tile_h = tile
    pad, line_h = 4, 11
    font = ImageFont.load_default()
    label_lines = [textwrap.wrap(label, max(8, tile_w // 6))[:3] for label in labels]
    head_h = line_h * max(len(x) for x in label_lines) + pad
    canvas = Image.new("RGB", (caption_width + len(columns) * (tile_w + pad), head_h + n * (tile_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, lines in enumerate(label_lines):
        for j, line in enumerate(lines):
            draw.text((caption_width + c * (tile_w + pad), j * line_h), line, fill="black", font=font)
    max_lines = max(1, tile_h // line_h)
    for r in range(n):
        y = head_h + r * (tile_h + pad)
        for j, line in enumerate(textwrap.wrap(row_captions[r], caption_width // 6)[:max_lines]):
            draw.text((2, y + j * line_h), line, fill="black", font=font)
        for c, images in enumerate(columns):
            image = Image.fromarray((np.clip(images[r], 0, 1) * 255).round().astype(np.uint8))
            x = caption_width + c * (tile_w + pad)
            resample = Image.NEAREST if tile >= max(image.size) else Image.LANCZOS  # crisp up, no aliasing down
            canvas.paste(image.resize((tile_w, tile_h), resample), (x, y))
            draw.rectangle((x - 1, y - 1, x + tile_w, y + tile_h), outline=(200, 200, 200))  # white scenes on white
    return canvas


def save_image(path: str | Path, image: Image.Image) -> Path:
    """Write a PIL image as PNG under a temporary name, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)
    return path
