"""Text-to-image generation with any loaded pipeline: deterministic per prompt and seed."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from svdtune.config import atomic_write_text, save_config
from svdtune.data import world
from svdtune.errors import UserError
from svdtune.eval.cost import stopwatch
from svdtune.pipelines import call_kwargs

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class GenerateConfig:
    model: str = "ref-unet"
    prompts: list[str] = dataclasses.field(default_factory=lambda: ["a large red circle at the top left, on a white background"])
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "auto"  # kernel of a quantized model (svdtune.kernels.dispatch.BACKENDS)
    output_dir: str = "runs/generate"

    def validate(self):
        if self.steps <= 0:
            raise ValueError(f"steps must be a positive integer, got {self.steps}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not self.prompts or not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ValueError("prompts must be a non-empty list of non-empty strings")
        from svdtune.kernels.dispatch import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")


def warn_unknown_words(prompts: list[str]) -> None:
    for prompt in prompts:
        unknown = world.unknown_words(prompt)
        if unknown:
            log.warning("prompt %r has words the reference world does not know: %s (generating anyway)",
                        prompt, ", ".join(sorted(set(unknown))))


@torch.no_grad()
def generate_images(pipe, prompts: list[str], steps: int, guidance_scale: float, seed: int,
                    batch_size: int = 16) -> tuple[np.ndarray, list[float]]:
    """Images as an NxHxWx3 float array in [0, 1], and the seconds each batch took per image.

    Image i uses seed + i whatever the batching, so results do not depend on batch_size.
    """
    if steps <= 0:
        raise UserError(f"steps must be a positive integer, got {steps}")
    device = pipe.device if hasattr(pipe, "device") else "cpu"
    images, per_image = [], []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        gens = [torch.Generator("cpu").manual_seed(seed + start + i) for i in range(len(chunk))]
        with stopwatch(device) as cost:  # not measure(): the caller's measured block must keep its peak
            out = pipe(prompt=chunk, num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=gens, output_type="np", **call_kwargs(pipe))
        images.append(out.images)
        per_image += [cost.seconds / len(chunk)] * len(chunk)
    return np.concatenate(images).astype(np.float32), per_image


def save_png(image: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(path)


def slug(text: str, n: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n]


def run_generate(cfg: GenerateConfig) -> Path:
    from svdtune.pipelines import is_world_model, load_any_pipeline

    out = Path(cfg.output_dir)
    if is_world_model(cfg.model):
        warn_unknown_words(cfg.prompts)
    pipe = load_any_pipeline(cfg.model, cfg.dtype, cfg.device, cfg.backend)
    save_config(cfg, out)
    images, seconds = generate_images(pipe, cfg.prompts, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size)
    records = []
    for i, (prompt, image) in enumerate(zip(cfg.prompts, images)):
        path = out / f"{i:03d}-{slug(prompt)}.png"
        save_png(image, path)
        records.append({"prompt": prompt, "seed": cfg.seed + i, "file": path.name, "seconds": round(seconds[i], 4)})
    atomic_write_text(out / "images.json", json.dumps(records, indent=1))
    return out
