"""Do rewritten prompts make better domain images? Promptist's test, in the reference world.

The user's plain prompts and their rewrites go to the same model with the same seeds; both sets
of images are scored against what the user asked for (the plain prompt's objects) and the
domain's style. Better means a higher style accuracy at no loss of alignment.
"""

from __future__ import annotations

import numpy as np
import torch

from svdtune.data import world
from svdtune.eval import world_evaluator as ev
from svdtune.generate import generate_images

ALIGNMENT = ("colour", "shape", "count", "all_objects")


def image_scores(evaluator, images: np.ndarray, plains: list[str], style: str) -> list[dict[str, float]]:
    """Per image, each in [0, 1]: colour, shape and count against its plain prompt's objects, all
    (every asked-for object right and nothing extra, whatever the style) and style."""
    preds = ev.predict(evaluator, torch.from_numpy(images).permute(0, 3, 1, 2).float())
    return [ev.score(p, world.parse_prompt(plain)) | {"style": float(p.style == style)} for p, plain in zip(preds, plains)]


def score_against_plain(evaluator, images: np.ndarray, plains: list[str], style: str) -> dict[str, float]:
    """Percent: style accuracy, and alignment with the plain prompts' objects (all_objects: every
    asked-for object right and nothing extra, whatever the style)."""
    rows = image_scores(evaluator, images, plains, style)
    return {"style": 100 * float(np.mean([r["style"] for r in rows])),
            **{k: 100 * float(np.mean([r["all" if k == "all_objects" else k] for r in rows])) for k in ALIGNMENT}}


def rewrite_effect(pipe, evaluator, plains: list[str], prompt_sets: dict[str, list[str]], style: str, steps: int = 20,
                   guidance: float = 4.0, seed: int = 0, batch_size: int = 16) -> dict:
    """Per named prompt set (the plain prompts themselves, their rewrites, ...; each one prompt per
    plain prompt): its images' scores against the plain prompts, and the images (under "images")."""
    images = {name: generate_images(pipe, prompts, steps, guidance, seed, batch_size)[0]
              for name, prompts in prompt_sets.items()}
    return {name: score_against_plain(evaluator, images[name], plains, style) for name in prompt_sets} | {"images": images}
