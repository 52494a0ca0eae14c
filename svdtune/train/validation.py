"""Validation during training: images of fixed prompts and seeds from the student, as a PNG grid,
and (for reference-world models) the evaluator's alignment and style scores."""

from __future__ import annotations

from pathlib import Path

from svdtune.eval.grid import save_grid
from svdtune.generate import generate_images
from svdtune.pipelines import with_denoiser
from svdtune.quant.calibrate import caption_prompts
from svdtune.quant.quantize import is_world_pipeline
from svdtune.train.config import TrainConfig
from svdtune.train.domain_data import captions_of, load_subset

N_DEFAULT = 8


def validation_prompts(cfg: TrainConfig, teacher) -> list[str]:
    """The configured prompts, else the domain's first validation captions, else world captions."""
    if cfg.validation.prompts:
        return list(cfg.validation.prompts)
    if cfg.domain.data:
        captions = captions_of(load_subset(cfg.domain.data, "val"))
        if captions:
            return captions[:N_DEFAULT]
    return caption_prompts(N_DEFAULT, "", is_world_pipeline(teacher), cfg.seed + 70_000, "validation.prompts")


def validate(cfg: TrainConfig, teacher, student, path: Path) -> dict[str, float]:
    prompts = validation_prompts(cfg, teacher)
    was_training = student.training
    student.eval()
    with with_denoiser(teacher, student):
        images, _ = generate_images(teacher, prompts, cfg.validation.steps, cfg.validation.guidance, cfg.validation.seed)
    student.train(was_training)
    save_grid(path, images, prompts)
    if not is_world_pipeline(teacher):
        return {}
    from svdtune.eval.world_bench import alignment
    from svdtune.pipelines import load_evaluator, resolve_model

    # The family's evaluator sits beside its pipelines (svdtune/assets/reference/evaluator).
    return alignment(load_evaluator(Path(resolve_model(cfg.model)).parent / "evaluator"), images, prompts)
