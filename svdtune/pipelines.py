"""Load diffusion pipelines (the shipped reference family or any diffusers folder / hub id)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

from svdtune.config import read_json
from svdtune.errors import UserError

REFERENCE_DIR = Path(__file__).parent / "assets" / "reference"
REFERENCE_MODELS = ("ref-unet", "ref-dit")
WORLD_MARKER = "world.json"
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
    path = resolve_model(name_or_path)
    pipe = DiffusionPipeline.from_pretrained(path, dtype=DTYPES[dtype], **absent_components(path))
    pipe.set_progress_bar_config(disable=True)
    marker = Path(path) / WORLD_MARKER
    pipe.svdtune_call_kwargs = read_json(marker).get("pipeline_kwargs", {}) if marker.is_file() else {}
    return pipe.to(device)


def call_kwargs(pipe) -> dict:
    """Arguments a model must be called with (its world.json "pipeline_kwargs"; e.g. ref-dit has no
    T5 and runs with max_sequence_length=0 instead of SD3's 256 zero tokens)."""
    return dict(getattr(pipe, "svdtune_call_kwargs", {}))


def absent_components(path: str) -> dict:
    """Components a local pipeline was saved without (e.g. SD3's T5), to pass as None.

    diffusers writes them as [null, null] in model_index.json but will not load the folder
    unless they are passed explicitly (`text_encoder_3=None, tokenizer_3=None` for SD3).
    """
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return {}
    entries = read_json(index)
    return {k: None for k, v in entries.items() if isinstance(v, list) and v == [None, None]}


def load_evaluator(path: str | os.PathLike | None = None):
    from svdtune.eval.world_evaluator import WorldEvaluator

    path = Path(path) if path else REFERENCE_DIR / "evaluator"
    if not (path / "model.safetensors").is_file():
        raise UserError(f"world evaluator weights not found in {str(path)!r}; "
                        "train them with ./launch.sh train-reference --config configs/reference/family.yaml")
    return WorldEvaluator.from_pretrained(str(path)).float().eval()


def is_world_model(name_or_path: str) -> bool:
    """True for pipelines trained on the reference world (the export writes WORLD_MARKER)."""
    try:
        return (Path(resolve_model(name_or_path)) / WORLD_MARKER).is_file()
    except UserError:
        return False


def denoiser_attr(pipe) -> str:
    components = getattr(pipe, "components", {})
    for attr in ("transformer", "unet"):
        if attr in components or isinstance(getattr(pipe, attr, None), torch.nn.Module):
            return attr
    raise UserError(f"{type(pipe).__name__} has no denoiser (expected a .unet or .transformer module)")


@contextmanager
def with_denoiser(pipe, model: torch.nn.Module):
    """Run `pipe` with `model` in place of its denoiser (e.g. a quantized student), then restore it."""
    attr = denoiser_attr(pipe)
    original = getattr(pipe, attr)
    setattr(pipe, attr, model)
    try:
        yield pipe
    finally:
        setattr(pipe, attr, original)


def load_any_pipeline(name_or_path: str, dtype: str = "float32", device: str = "cpu", backend: str = "auto"):
    """A pipeline from a reference name or diffusers folder, a `svdtune quantize` folder or an svdq
    artifact (`svdtune export`); quantized denoisers run on `backend` (svdtune.kernels.dispatch)."""
    from svdtune.kernels.artifact import MANIFEST as SVDQ_MANIFEST
    from svdtune.quant import set_backend
    from svdtune.quant.serialize import MANIFEST as QUANT_MANIFEST

    folder = Path(name_or_path).expanduser()
    for manifest_name in (SVDQ_MANIFEST, QUANT_MANIFEST):
        if (folder / manifest_name).is_file():
            break
    else:
        return load_pipeline(name_or_path, dtype, device)
    source = read_json(folder / manifest_name).get("source")
    if not source:
        raise UserError(f"{folder / manifest_name}: no 'source' pipeline recorded; cannot build a pipeline around it")
    pipe = load_pipeline(source, dtype, device)
    attr = denoiser_attr(pipe)
    if manifest_name == SVDQ_MANIFEST:
        from svdtune.kernels.artifact import load_svdq

        model = load_svdq(folder, getattr(pipe, attr), DTYPES[dtype])
    else:
        from svdtune.quant.serialize import load_quantized

        model = load_quantized(folder, getattr(pipe, attr))
    setattr(pipe, attr, set_backend(model, backend))
    return pipe
