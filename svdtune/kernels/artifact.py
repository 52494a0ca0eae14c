"""Save / load a quantized denoiser in the svdq kernel layout: `svdq.safetensors` + `svdq_manifest.json`.

Quantized layers are stored as `<layer>.<key>` in the padded kernel layout of `format.py` (FORMAT.md);
every other tensor of the denoiser is stored under its state-dict name in the artifact's 16-bit
dtype. Loading rebuilds the diffusers model from the manifest, swaps in `SVDQuantLinear` layers and
fills them, so every backend (reference, cpu, ...) runs the loaded model.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from svdtune.config import atomic_save_file, atomic_write_text
from svdtune.errors import UserError
from svdtune.kernels.format import (KEYS, RANK_MULTIPLE, TILE, pack_layer, packed_shapes, padded_sizes,
                                    unpack_layer)
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.serialize import build_model, install_shells, load_state, model_config, read_manifest, untied

FORMAT = "svdtune-svdq"
VERSION = 1
MANIFEST = "svdq_manifest.json"
WEIGHTS = "svdq.safetensors"
# "auto": the model's own dtype. A W4A4 model is not smooth in its inputs: rounding its smoothing
# or branch (fp32 on CPU) to 16 bits flips some 4-bit activation roundings downstream, so only the
# model's own dtype reproduces it exactly (bf16 / fp16 models lose nothing in a 16-bit artifact).
DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def save_svdq(model: nn.Module, directory: str | Path, dtype: str = "auto", extra: dict | None = None) -> Path:
    """Write `model` (a denoiser with `SVDQuantLinear` layers, adapters merged) to `directory`.
    `extra` goes into the manifest (source model, merged adapters and their strengths, ...)."""
    if dtype not in DTYPES:
        raise UserError(f"artifact dtype {dtype!r} is not supported; expected one of {', '.join(DTYPES)}")
    torch_dtype = DTYPES[dtype] or next(model.parameters()).dtype
    dtype = str(torch_dtype).removeprefix("torch.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}
    tensors, inside = {}, set()
    for name, layer in layers.items():
        tensors |= {f"{name}.{k}": v for k, v in pack_layer(layer, torch_dtype).items()}
        inside |= {f"{name}.{k}" for k in layer.state_dict()}
    for key, value in model.state_dict().items():
        if key not in inside:
            tensors[key] = value.to(torch_dtype) if value.is_floating_point() else value
    manifest = {
        "format": FORMAT, "format_version": VERSION, "dtype": dtype, "tile": TILE, "rank_multiple": RANK_MULTIPLE,
        "model_class": type(model).__name__, "model_config": model_config(model),
        "layers": {n: dataclasses.asdict(m.spec) for n, m in layers.items()},
        "padded": {n: padded_sizes(m.spec) for n, m in layers.items()},
        **(extra or {}),
    }
    atomic_save_file(untied(tensors), directory / WEIGHTS, {"format": FORMAT})
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, default=list))
    return directory


def load_svdq(directory: str | Path, model: nn.Module | None = None, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The denoiser of an svdq artifact in `dtype` (fp32 by default: what the CPU kernels take)."""
    directory = Path(directory)
    path = directory / MANIFEST
    manifest = read_manifest(path, FORMAT, "an svdq artifact", VERSION)
    model = (model if model is not None else build_model(manifest, path)).to(dtype)
    specs = install_shells(model, manifest, path)
    tensors = read_tensors(directory / WEIGHTS)
    state = {}
    for name, spec in specs.items():
        own = {k: tensors.pop(f"{name}.{k}") for k in KEYS if f"{name}.{k}" in tensors}
        check_layer(own, spec, name, directory / WEIGHTS)
        state |= {f"{name}.{k}": v for k, v in unpack_layer(own, spec, dtype).items()}
    state |= {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    load_state(model, state, directory / WEIGHTS)
    model.svdtune_artifact = manifest
    return model.eval()


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"{path} is missing")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:  # truncated or not a safetensors file
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def check_layer(tensors: dict, spec, name: str, path: Path) -> None:
    """Every kernel tensor of layer `name` is present with the padded shape its spec implies."""
    for key, shape in packed_shapes(spec).items():
        if key not in tensors:
            raise UserError(f"{path}: tensor {name}.{key} is missing")
        if tuple(tensors[key].shape) != shape:
            raise UserError(f"{path}: tensor {name}.{key} has shape {tuple(tensors[key].shape)}, expected {shape} "
                            f"for a {spec.in_features} -> {spec.out_channels} layer of rank {spec.rank}")
