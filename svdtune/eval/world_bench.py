"""Prompt suites drawn fresh from the world, and GenEval-style alignment tables for images."""

from __future__ import annotations

import random

import numpy as np
import torch

from svdtune.data import world
from svdtune.eval import world_evaluator as ev

# category -> (number of objects, held-out pairs: "exclude" / "only")
SUITES = {
    "single": (1, "exclude"),
    "two": (2, "exclude"),
    "held-out single": (1, "only"),
    "held-out two": (2, "only"),
}
# Seeds of evaluation suites are far from the training scene seeds (0..n_scenes).
EVAL_SEED = 10_000


def prompt_suite(category: str, n: int, seed: int = EVAL_SEED) -> list[world.Scene]:
    if category not in SUITES:
        raise ValueError(f"unknown prompt suite {category!r}; expected one of {sorted(SUITES)}")
    n_objects, held_out = SUITES[category]
    rng = random.Random(f"{seed}-{category}")
    return [world.sample_scene(rng, style="plain", n_objects=n_objects, held_out=held_out) for _ in range(n)]


def alignment(evaluator: ev.WorldEvaluator, images: np.ndarray | torch.Tensor, prompts: list[str]) -> dict[str, float]:
    """Mean alignment scores (percent) of images with the prompts they were made for.

    images: NxHxWx3 numpy or Nx3xHxW torch, values in [0, 1]. `style` is averaged over the prompts
    that name a style.
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    preds = ev.predict(evaluator, images.float())
    rows = [ev.score(p, world.parse_prompt(prompt), world.prompt_style(prompt)) for p, prompt in zip(preds, prompts)]
    keys = dict.fromkeys(k for r in rows for k in r)  # "style" only from prompts that name one
    return {k: 100.0 * float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def render_scenes(scenes: list[world.Scene]) -> np.ndarray:
    return world.render_batch(scenes).transpose(0, 2, 3, 1)


@torch.no_grad()
def evaluator_features(evaluator: ev.WorldEvaluator, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Pooled evaluator features (N x feature_dim) for a Fréchet distance on this world."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images).permute(0, 3, 1, 2)
    return torch.cat([evaluator(images[i:i + batch_size].float())["features"] for i in range(0, len(images), batch_size)])


METRICS = ("colour", "shape", "size", "position", "all")


def alignment_table(by_model: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown table of alignment scores: {model: {suite: scores}}."""
    lines = ["| model | suite | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for model, by_suite in by_model.items():
        for suite, m in by_suite.items():
            lines.append(f"| {model} | {suite} | " + " | ".join(f"{m[k]:.1f}" for k in METRICS) + " |")
    return "\n".join(lines)
