"""Load diffusion pipelines (the shipped reference family or any diffusers folder / hub id)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from svdtune.errors import UserError

REFERENCE_DIR = Path(__file__).parent / "assets" / "reference"
REFERENCE_MODELS = ("ref-unet", "ref-dit")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model(name_or_path: str) -> str:
    """A reference-family name, a local diffusers folder, or (when online) a hub id."""
    if name_or_path in REFERENCE_MODELS:
        path = REFERENCE_DIR / name_or_path
        if not (path / "model_index.json").is_file():
            raise UserError(f"the reference model {name_or_path!r} is not in {REFERENCE_DIR}; "
                            "train it with ./launch.sh train-reference --config configs/reference/family.yaml")
        return str(path)
    path = Path(name_or_path).expanduser()
    if path.exists() or name_or_path.startswith((".", "/", "~")) or os.environ.get("HF_HUB_OFFLINE") == "1":
        if not path.is_dir():
            raise UserError(f"model directory {str(path)!r} does not exist; expected one of "
                            f"{', '.join(REFERENCE_MODELS)} or a diffusers pipeline folder")
        if not (path / "model_index.json").is_file():
            raise UserError(f"{str(path)!r} is not a diffusers pipeline folder (no model_index.json in it)")
        return str(path)
    return name_or_path


def load_pipeline(name_or_path: str, dtype: str = "float32", device: str = "cpu"):
    from diffusers import DiffusionPipeline

    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
    pipe = DiffusionPipeline.from_pretrained(resolve_model(name_or_path), torch_dtype=DTYPES[dtype])
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_evaluator(path: str | os.PathLike | None = None):
    from svdtune.eval.world_evaluator import WorldEvaluator

    path = Path(path) if path else REFERENCE_DIR / "evaluator"
    if not (path / "model.safetensors").is_file():
        raise UserError(f"world evaluator weights not found in {str(path)!r}; "
                        "train them with ./launch.sh train-reference --config configs/reference/family.yaml")
    return WorldEvaluator.from_pretrained(str(path)).float().eval()


def is_reference(name_or_path: str) -> bool:
    return name_or_path in REFERENCE_MODELS or Path(name_or_path).resolve().parent == REFERENCE_DIR.resolve()
