"""ImageReward from local weights, through the ImageReward package (`ImageReward.load`, `score`).

The package builds BLIP with torchvision, which does not import on these machines (FACTS.md), so
here it is usually unavailable: `scorer()` then raises `Unavailable` with the reason, which the
report prints in one line. Nothing stands in for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from svdtune.errors import UserError


class Unavailable(Exception):
    """The metric cannot be computed here; the message says why (one line)."""


def scorer(path: str | Path, device: str = "cpu"):
    """A callable (images N x H x W x 3 in [0, 1], prompts) -> per-image rewards."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image_reward: {str(path)!r} does not exist (expected the ImageReward.pt checkpoint)")
    try:
        import ImageReward as RM  # noqa: N813 - the package's own name
    except Exception as e:  # torchvision's ops fail at import with RuntimeError, a missing package with ImportError
        raise Unavailable(f"the ImageReward package does not import here ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    med_config = path.with_name("med_config.json")  # else the package downloads it
    try:
        model = RM.load(str(path), device=device, med_config=str(med_config) if med_config.is_file() else None)
    except Exception as e:
        raise Unavailable(f"ImageReward.load({str(path)!r}) failed ({type(e).__name__}: {str(e).splitlines()[0]})") from None

    @torch.no_grad()
    def score(images: np.ndarray, prompts: list[str]) -> torch.Tensor:
        pil = [Image.fromarray((np.clip(im, 0, 1) * 255).round().astype(np.uint8)) for im in images]
        return torch.tensor([float(model.score(p, [im])) for p, im in zip(prompts, pil)])

    return score
