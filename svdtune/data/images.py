"""Images of records: checking that they exist and decode, and loading them (world addresses render)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from svdtune.data.sources.world import render_address

CHECKS = ("none", "exists", "decode")


def image_problem(image: str, check: str) -> str:
    """"" when the record's image passes `check`, else why not."""
    if check == "none" or image.startswith("world://"):
        return ""
    if not image:
        return "record has no image"
    if not os.path.isfile(image):
        return "image file missing"
    if check == "decode":
        try:
            with Image.open(image) as im:
                im.load()  # verify() misses truncated files; a full decode does not
        except (OSError, SyntaxError, ValueError):
            return "image truncated or not an image"
        except Image.DecompressionBombError:  # not an OSError: it would stop the whole build
            return "image larger than PIL's decompression-bomb limit"
    return ""


def check_batch(batch, check: str):
    return {"image_problem": [image_problem(i, check) for i in batch["image"]]}


def load_image(image: str) -> Image.Image:
    if image.startswith("world://"):
        return Image.fromarray((render_address(image) * 255).round().astype(np.uint8))
    with Image.open(image) as im:  # closes the file: a training epoch opens thousands
        return im.convert("RGB")
