"""`svdtune quantize`: calibrate and quantize a pipeline's denoiser, save it, report what it cost.

    svdtune quantize --config configs/quant/ref-dit.yaml [quant.rank=16 ...]
    svdtune quantize --config configs/quant/flux-dev.yaml dry_run=true

Writes to `output_dir`: the quantized checkpoint (model.safetensors + quant_manifest.json),
config.yaml (resolved) and summary.json (sizes, timings, peak memory, per-layer errors).
A dry run builds the denoiser from `architecture` (its config.json) on the meta device, with no
weights, and writes plan.json: which layers would be quantized, which stay 16-bit and why, and
the sizes the result would have.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from svdtune.config import atomic_write_text, read_json, save_config
from svdtune.eval.cost import measure
from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.quantize import plan, quantize, size_summary
from svdtune.quant.serialize import save_quantized

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class QuantizeJobConfig:
    model: str = "ref-dit"           # reference name, local diffusers folder or hub id
    output_dir: str = "runs/quantize/ref-dit"
    dtype: str = "float32"
    device: str = "cpu"
    quant: QuantConfig = dataclasses.field(default_factory=QuantConfig)
    dry_run: bool = False
    architecture: str = ""           # denoiser config.json for dry runs (default: the model's own)


def planned_model(path: Path, quant: QuantConfig):
    """The denoiser of an architecture file (a diffusers config.json) on the meta device, with the
    `SVDQuantLinear` shells `quant` would give it: sizes without weights."""
    import diffusers
    import torch

    from svdtune.errors import UserError

    if not path.is_file():
        raise UserError(f"architecture file {str(path)!r} does not exist")
    arch = read_json(path)
    cls = getattr(diffusers, arch.get("_class_name", ""), None)
    if cls is None:
        raise UserError(f"{path}: _class_name {arch.get('_class_name')!r} is not a diffusers model class")
    with torch.device("meta"):
        return plan(cls.from_config(arch), quant)


def dry_run(cfg: QuantizeJobConfig) -> Path:
    from svdtune.errors import UserError
    from svdtune.pipelines import resolve_model

    path = Path(cfg.architecture) if cfg.architecture else None
    if path is None:
        folder = Path(resolve_model(cfg.model))
        path = next((folder / d / "config.json" for d in ("transformer", "unet") if (folder / d / "config.json").is_file()), None)
        if path is None:
            raise UserError(f"no denoiser config.json under {str(folder)!r}; pass architecture=path/to/config.json")
    model = planned_model(path, cfg.quant)
    name = type(model).__name__
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    layers = [n for n, m in model.named_modules() if isinstance(m, SVDQuantLinear)]
    summary = {"model": cfg.model, "architecture": str(path), "class": name, "quantized": layers,
               "skipped": model.svdtune_quant.skipped, "size": size_summary(model)}
    atomic_write_text(out / "plan.json", json.dumps(summary, indent=1))
    s = summary["size"]
    log.info("%s: %d layers would be quantized (%d skipped); they take %.3fx their 16-bit size; the denoiser "
             "%.2f GiB -> %.2f GiB", name, len(layers), len(summary["skipped"]), s["layers_ratio"],
             s["denoiser_fp16_bytes"] / 2**30, s["denoiser_quantized_bytes"] / 2**30)
    return out


def run_quantize(cfg: QuantizeJobConfig) -> Path:
    from svdtune.pipelines import load_pipeline

    if cfg.dry_run:
        return dry_run(cfg)
    out = Path(cfg.output_dir)
    pipe = load_pipeline(cfg.model, cfg.dtype, cfg.device)
    save_config(cfg, out)
    with measure(cfg.device) as cost:
        model = quantize(pipe, cfg.quant)
    save_quantized(model, out, source=cfg.model)
    report = model.svdtune_quant
    errors = sorted(report.layers.values())
    summary = {
        "model": cfg.model, "method": report.config.method, "layers": len(report.layers),
        "skipped": report.skipped, "seconds": report.seconds | {"total": round(cost.seconds, 2)},
        f"peak_{cost.memory_kind}_mib": round(cost.peak_mib, 1), "size": size_summary(model),
        "relative_error_median": errors[len(errors) // 2], "relative_error_worst": errors[-1],
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    s = summary["size"]
    log.info("quantized %d layers of %s in %.1f s (peak %.0f MiB); quantized layers %.2fx their 16-bit size; "
                "saved to %s", len(report.layers), cfg.model, cost.seconds, cost.peak_mib, s["layers_ratio"], out)
    return out
