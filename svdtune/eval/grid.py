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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image_grid(images, captions, **kw).save(tmp, format="PNG")
    tmp.replace(path)
    return path
