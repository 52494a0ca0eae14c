"""Checks of everything a demo user sends, each failure one message that names the value and the limit.

The checks run before any model work, so a bad request costs nothing and the app keeps serving.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from svdtune.app.config import Limits
from svdtune.errors import UserError

EXAMPLE_PROMPT = "a large red circle at the top left, on a white background"
MODES = ("text", "image", "sketch")


class DemoInputError(UserError):
    """A request the demo refuses; the message is shown to the user as it is."""


def check_prompt(prompt, limits: Limits) -> str:
    text = (prompt or "").strip() if isinstance(prompt, str) or prompt is None else None
    if text is None:
        raise DemoInputError(f"the prompt must be text, got {type(prompt).__name__}")
    if not text:
        raise DemoInputError(f"the prompt is empty: type what to draw, for example '{EXAMPLE_PROMPT}'")
    if len(text) > limits.max_prompt_chars:
        raise DemoInputError(f"the prompt is {len(text)} characters long; the limit is {limits.max_prompt_chars} "
                             "(limits.max_prompt_chars)")
    return text


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DemoInputError(f"{name} must be a number, got {value!r}")
    return value


def check_steps(steps, limits: Limits) -> int:
    steps = _number(steps, "steps")
    if steps != int(steps) or not 1 <= steps <= limits.max_steps:
        raise DemoInputError(f"steps = {steps:g} is outside 1..{limits.max_steps} (limits.max_steps)")
    return int(steps)


def check_guidance(guidance, limits: Limits) -> float:
    guidance = _number(guidance, "guidance")
    if not 0 <= guidance <= limits.max_guidance:
        raise DemoInputError(f"guidance = {guidance:g} is outside 0..{limits.max_guidance:g} (limits.max_guidance)")
    return float(guidance)


def check_seed(seed) -> int:
    seed = _number(seed, "seed")
    if seed != int(seed) or not 0 <= seed < 2**32:
        raise DemoInputError(f"seed = {seed!r} must be a whole number in 0..{2**32 - 1}")
    return int(seed)


def check_strength(strength, steps: int) -> float:
    strength = _number(strength, "strength")
    if not 0 < strength <= 1:
        raise DemoInputError(f"strength = {strength:g} must be in (0, 1]")
    if int(steps * strength) < 1:  # diffusers runs int(steps * strength) of the steps
        raise DemoInputError(f"strength {strength:g} x {steps} steps leaves no denoising step; "
                             "raise the steps or the strength")
    return float(strength)


def open_upload(path: str | Path | None, limits: Limits, what: str = "the upload", name: str | None = None
                ) -> Image.Image:
    """The uploaded file as an RGB image (transparency over white, EXIF rotation applied), after
    checking its size in bytes and, from the header alone, in pixels."""
    if path is None:
        raise DemoInputError(f"no image: {what} is missing")
    path = Path(path)
    label = f"{what} {name or path.name!r}"
    if not path.is_file():
        raise DemoInputError(f"{label} was not received; upload it again")
    size = path.stat().st_size
    if size > limits.max_upload_mb * 2**20:
        raise DemoInputError(f"{label} is {size / 2**20:.1f} MB; the limit is {limits.max_upload_mb:g} MB "
                             "(limits.max_upload_mb)")
    try:
        image = Image.open(path)  # reads the header only
    except Image.DecompressionBombError:  # PIL's own refusal, far above ours
        raise DemoInputError(f"{label} has more than {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels; the limit "
                             f"is {limits.max_pixels / 1e6:.1f} megapixels (limits.max_pixels)") from None
    except (UnidentifiedImageError, OSError):
        raise DemoInputError(f"{label} is not an image this app can read (PNG, JPEG, WebP, GIF or BMP)") from None
    w, h = image.size
    if w * h > limits.max_pixels:
        raise DemoInputError(f"{label} is {w}x{h} = {w * h / 1e6:.1f} megapixels; the limit is "
                             f"{limits.max_pixels / 1e6:.1f} megapixels (limits.max_pixels)")
    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "P", "PA"):
            rgba = image.convert("RGBA")
            image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
        return image.convert("RGB")
    except (OSError, ValueError) as e:
        raise DemoInputError(f"{label} could not be decoded ({e})") from None


def is_blank(image: Image.Image) -> bool:
    """True for a one-colour image: an untouched sketchpad."""
    return all(lo == hi for lo, hi in image.getextrema())
