"""Model variants for `svdtune eval`: `label=spec`, where spec is

    ref-unet | path/to/diffusers-folder       16-bit
    runs/quantize/ref-unet | runs/export      W4A4 (a `svdtune quantize` folder or an svdq export)
    runs/train/pastel[:STRENGTH]              W4A4 + the run's adapter at STRENGTH (default 1);
                                              RUN:0 is the run's W4A4 backbone with the adapter off

Each variant knows the 16-bit pipeline it comes from (its `source`), so its images can be compared
with that pipeline's images for the same prompts and seeds (the SVDQuant protocol).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from svdtune.config import read_json
from svdtune.errors import UserError
from svdtune.pipelines import REFERENCE_MODELS, denoiser_attr, resolve_model

KINDS = ("16-bit", "W4A4", "W4A4 + adapter")
SPECS = ("a reference model name (" + ", ".join(REFERENCE_MODELS) + "), a diffusers folder, a `svdtune quantize` "
         "folder, an svdq export or a `svdtune train` run folder (RUN[:STRENGTH])")


@dataclass
class Variant:
    label: str
    spec: str
    kind: str             # one of KINDS
    path: str             # the model: resolved pipeline folder, quantized folder or run folder
    source: str           # resolved folder of the 16-bit pipeline it comes from
    strength: float = 1.0  # of a run's adapter

    @property
    def is_16bit(self) -> bool:
        return self.kind == "16-bit"


def parse(item: str) -> Variant:
    label, sep, spec = item.partition("=")
    label, spec = label.strip(), spec.strip()
    if not sep or not label or not spec:
        raise UserError(f"variants: {item!r} is not label=spec (for example 'W4A4=runs/quantize/ref-unet')")
    return classify(label, spec)


def parse_all(items: list[str]) -> list[Variant]:
    variants = [parse(i) for i in items]
    labels = [v.label for v in variants]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup:
        raise UserError(f"variants: the label {dup!r} is used twice")
    return variants


def _quant_manifest(folder: Path) -> Path | None:
    from svdtune.kernels.artifact import MANIFEST as SVDQ
    from svdtune.quant.serialize import MANIFEST as QUANT

    return next((folder / m for m in (SVDQ, QUANT) if (folder / m).is_file()), None)


def classify(label: str, spec: str) -> Variant:
    path, strength = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head and not Path(spec).exists():
        try:
            path, strength = head, float(tail)
        except ValueError:
            raise UserError(f"variant {label!r}: {spec!r}: the adapter strength after ':' must be a number") from None
    folder = Path(path).expanduser()
    manifest = _quant_manifest(folder) if folder.is_dir() else None
    is_run = (folder / "config.yaml").is_file() and ((folder / "adapter").is_dir() or (folder / "backbone").is_dir())
    if manifest is not None or is_run:
        if manifest is None:
            if not (folder / "adapter").is_dir():  # found now, not after every other variant has run
                raise UserError(f"variant {label!r}: {str(folder)!r}: the run has not finished (no adapter/ in it)")
            return Variant(label, spec, "W4A4 + adapter" if strength else "W4A4", str(folder), _run_source(folder, label),
                           strength)
        if path != spec:
            raise UserError(f"variant {label!r}: {spec!r}: a strength applies to training runs only")
        source = read_json(manifest).get("source")
        if not source:
            raise UserError(f"variant {label!r}: {manifest} records no 'source' pipeline")
        return Variant(label, spec, "W4A4", str(folder), _resolved(label, source))
    if path != spec:
        where = "does not exist" if not folder.exists() else "is not a `svdtune train` run (no config.yaml and adapter/ in it)"
        raise UserError(f"variant {label!r}: {path!r} {where}; RUN:STRENGTH needs a training run folder")
    if path not in REFERENCE_MODELS and not folder.exists():
        raise UserError(f"variant {label!r}: {spec!r} does not exist; expected {SPECS}")
    if path not in REFERENCE_MODELS and not (folder / "model_index.json").is_file():
        raise UserError(f"variant {label!r}: {spec!r} is none of {SPECS}")
    resolved = _resolved(label, path)
    return Variant(label, spec, "16-bit", resolved, resolved)


def _resolved(label: str, name: str) -> str:
    try:
        path = resolve_model(name)
    except UserError as e:
        raise UserError(f"variant {label!r}: {e}") from None
    return str(Path(path).resolve()) if Path(path).exists() else path


def _run_source(run: Path, label: str) -> str:
    from svdtune.config import load_config
    from svdtune.train.config import TrainConfig

    return _resolved(label, load_config(TrainConfig, run / "config.yaml").model)


def load(v: Variant, dtype: str = "float32", device: str = "cpu", backend: str = "auto"):
    """The variant's pipeline, its quantized denoiser on `backend`."""
    from svdtune.pipelines import load_any_pipeline, load_pipeline
    from svdtune.quant import set_backend

    if v.kind == "16-bit":
        return load_pipeline(v.path, dtype, device)
    if not (Path(v.path) / "config.yaml").is_file() or _quant_manifest(Path(v.path)) is not None:
        return load_any_pipeline(v.path, dtype, device, backend)
    from svdtune.train.lora import lora_layers
    from svdtune.train.student import load_trained

    if dtype != "float32":
        raise UserError(f"variant {v.label!r}: training runs are evaluated in float32 (their backbone and adapter "
                        f"are float32), not {dtype}; export the run (svdtune export) to evaluate it in {dtype}")
    pipe = load_pipeline(v.source, dtype, device)
    model, _ = load_trained(v.path)
    for layer in lora_layers(model).values():
        if v.strength == 0:  # off, not times zero: its cost is the backbone's alone
            layer.enable_adapters(False)
        else:
            layer.scaling = {a: s * v.strength for a, s in layer.scaling.items()}
    setattr(pipe, denoiser_attr(pipe), set_backend(model, backend).to(device))
    return pipe


def ranks(denoiser: nn.Module) -> dict[str, int]:
    """The most common low-rank branch rank of the quantized layers and adapter rank (0 if none)."""
    from svdtune.quant.linear import SVDQuantLinear
    from svdtune.train.lora import lora_layers

    branch = [m.spec.rank for m in denoiser.modules() if isinstance(m, SVDQuantLinear)]
    adapter = [sum(layer.r[a] for a in layer.lora_A if not layer.disable_adapters)
               for layer in lora_layers(denoiser).values()]
    return {"branch": statistics.mode(branch) if branch else 0, "adapter": statistics.mode(adapter) if adapter else 0}


def _bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def sizes(v: Variant, pipe) -> dict:
    """Sizes (MiB): on disk as stored, and of the denoiser counted in a common unit (quantized layers
    as packed, every other tensor and the adapter in 16 bits), plus quantization time when recorded."""
    from svdtune.quant.quantize import size_summary
    from svdtune.train.lora import lora_layers

    folder, attr = Path(v.path), denoiser_attr(pipe)
    denoiser = getattr(pipe, attr)
    adapter_params = sum(p.numel() for layer in lora_layers(denoiser).values()
                         for n, p in layer.named_parameters() if "lora_" in n)
    summary = size_summary(denoiser)  # counts adapter parameters among the 16-bit ones
    denoiser_16 = summary["denoiser_quantized_bytes"] - 2 * adapter_params
    out = {"denoiser_mib": denoiser_16 / 2**20, "adapter_mib": 2 * adapter_params / 2**20 if v.strength else 0.0,
           "disk_mib": None, "adapter_disk_mib": None, "quantize_s": None}
    if v.kind == "16-bit":
        sub = folder / attr
        out["disk_mib"] = _bytes(sub.rglob("*")) / 2**20 if sub.is_dir() else None
        return out
    backbone = folder
    if (folder / "config.yaml").is_file() and _quant_manifest(folder) is None:  # a run: its backbone, its adapter
        from svdtune.config import load_config
        from svdtune.train.config import TrainConfig

        cfg = load_config(TrainConfig, folder / "config.yaml")
        backbone = Path(cfg.quantized) if cfg.quantized else folder / "backbone"
        if v.strength:
            out["adapter_disk_mib"] = _bytes((folder / "adapter").glob("*.safetensors")) / 2**20
    manifest = _quant_manifest(backbone)
    out["disk_mib"] = _bytes(backbone.glob("*.safetensors")) / 2**20
    seconds = read_json(manifest).get("seconds") if manifest else None
    out["quantize_s"] = sum(seconds.values()) if seconds else None
    return out

