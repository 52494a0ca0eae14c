"""Save / load a quantized denoiser: `model.safetensors` (packed 4-bit codes, scales, smoothing,
branch and the 16-bit layers) plus `quant_manifest.json` (config, per-layer specs, model class,
model config and source). Loading rebuilds the model from its config, swaps in empty
`SVDQuantLinear` shells and fills them: no recalibration, no pickle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from svdtune.config import atomic_save_file, atomic_write_text, read_json
from svdtune.errors import UserError
from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import LayerSpec, SVDQuantLinear
from svdtune.quant.quantize import QuantReport

MANIFEST = "quant_manifest.json"
WEIGHTS = "model.safetensors"
FORMAT = "svdtune-quant"
# 2: the branch's down-projection acts on the unsmoothed input (version 1 stored it smoothed)
FORMAT_VERSION = 2


def save_quantized(model: nn.Module, directory: str | Path, source: str | None = None) -> Path:
    report: QuantReport = getattr(model, "svdtune_quant", None)
    if report is None:
        raise UserError("this model was not quantized with svdtune.quant.quantize (no svdtune_quant report)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    layers = {n: dataclasses.asdict(m.spec) for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "version": report.config.version,
        "model_class": type(model).__name__, "model_config": model_config(model),
        "source": source, "config": dataclasses.asdict(report.config), "layers": layers,
        "skipped": report.skipped, "output_error": report.layers, "seconds": report.seconds,
    }
    atomic_save_file(untied(model.state_dict()), directory / WEIGHTS, {"format": FORMAT})
    atomic_write_text(directory / MANIFEST, json.dumps(manifest, indent=1, default=list))
    return directory


def _describe(m: nn.Module) -> str:
    if isinstance(m, nn.Linear):
        return f"Linear({m.in_features} -> {m.out_features})"
    if isinstance(m, nn.Conv2d):
        return f"Conv2d({m.in_channels} -> {m.out_channels}, kernel {tuple(m.kernel_size)})"
    return type(m).__name__


def _matches(m: nn.Module, spec: LayerSpec) -> bool:
    if spec.kernel_size is None:
        return isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (spec.in_channels, spec.out_channels)
    return (isinstance(m, nn.Conv2d) and m.groups == 1
            and (m.in_channels, m.out_channels, tuple(m.kernel_size)) == (spec.in_channels, spec.out_channels, spec.kernel_size))


def load_quantized(directory: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Load a `save_quantized` folder into `model` (a fresh 16-bit denoiser of the same
    architecture) or, without one, into a model built from the manifest's class and config."""
    directory = Path(directory)
    path = directory / MANIFEST
    manifest = read_manifest(path, FORMAT, "a quantized checkpoint", FORMAT_VERSION)
    config = QuantConfig.from_json(json.dumps(manifest["config"]), str(path))
    model = model if model is not None else build_model(manifest, path)
    install_shells(model, manifest, path)
    load_state(model, load_file(directory / WEIGHTS, device=str(next(model.parameters()).device)), directory / WEIGHTS)
    model.svdtune_quant = QuantReport(config.resolved(), manifest.get("output_error", {}),
                                      manifest.get("skipped", {}), manifest.get("seconds", {}))
    return model.eval()


def read_manifest(path: Path, fmt: str, what: str, version: int | None = None) -> dict:
    """The JSON manifest at `path`, checked to be of format `fmt` (and `version`, when given)."""
    if not path.is_file():
        raise UserError(f"{str(path.parent)!r} is not {what} (no {path.name} in it)")
    manifest = read_json(path)
    if manifest.get("format") != fmt:
        raise UserError(f"{path}: format is {manifest.get('format')!r}, expected {fmt!r}")
    if version is not None and manifest.get("format_version") != version:
        raise UserError(f"{path}: format_version is {manifest.get('format_version')!r}; this svdtune reads "
                        f"version {version}")
    return manifest


def build_model(manifest: dict, path: Path) -> nn.Module:
    """A fresh diffusers model of the manifest's class and config."""
    import diffusers

    cls = getattr(diffusers, manifest["model_class"], None)
    if cls is None:
        raise UserError(f"{path}: model_class {manifest['model_class']!r} is not a diffusers model class")
    return cls.from_config(manifest["model_config"])


def install_shells(model: nn.Module, manifest: dict, path: Path) -> dict[str, LayerSpec]:
    """Replace each layer the manifest lists with an empty `SVDQuantLinear` of its spec."""
    dtype = next(model.parameters()).dtype
    specs = {}
    for name, raw in manifest["layers"].items():
        try:
            spec = specs[name] = LayerSpec.from_dict(raw)
        except (TypeError, ValueError) as e:  # unknown or missing fields, a bad format name
            raise UserError(f"{path}: layer {name!r} has an unreadable spec in the manifest ({e})") from None
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise UserError(f"{path}: the model has no layer {name!r} (checkpoint made for {manifest['model_class']})") from None
        if not _matches(current, spec):
            want = f"{'Conv2d' if spec.kernel_size else 'Linear'}({spec.in_channels} -> {spec.out_channels})"
            raise UserError(f"{path}: layer {name!r} is {_describe(current)} in the model but {want} in the checkpoint")
        model.set_submodule(name, SVDQuantLinear(spec, dtype=dtype, device=current.weight.device))
    return specs


def load_state(model: nn.Module, state: dict, path: Path) -> None:
    """`load_state_dict(strict)` whose errors name the file and the first offending tensor."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch: name the first tensor
        raise UserError(f"{path}: {str(e).splitlines()[1].strip()}") from None
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise UserError(f"{path}: tensor {key!r} is {'missing' if missing else 'not in the model'}")


def model_config(model: nn.Module) -> dict:
    """The model's config as a dict: diffusers' FrozenDict or a transformers PretrainedConfig."""
    config = getattr(model, "config", {})
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


def untied(state: dict) -> dict:
    """A state dict safetensors can write: tensors that share memory (tied embeddings) are copied."""
    seen, out = set(), {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        out[name] = t.clone() if key in seen else t
        seen.add(key)
    return out
