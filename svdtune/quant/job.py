"""`svdtune quantize`: calibrate and quantize a pipeline's denoiser, save it, report what it cost.

    svdtune quantize --config configs/quant/ref-dit.yaml [quant.rank=16 ...]

Writes to `output_dir`: the quantized checkpoint (model.safetensors + quant_manifest.json),
config.yaml (resolved) and summary.json (sizes, timings, peak memory, per-layer errors).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from svdtune.config import atomic_write_text, save_config
from svdtune.eval.cost import measure
from svdtune.quant.config import QuantConfig
from svdtune.quant.quantize import quantize, size_summary
from svdtune.quant.serialize import load_quantized, save_quantized

log = logging.getLogger("svdtune")


@dataclasses.dataclass
class QuantizeJobConfig:
    model: str = "ref-dit"           # reference name, local diffusers folder or hub id
    output_dir: str = "runs/quantize/ref-dit"
    dtype: str = "float32"
    device: str = "cpu"
    quant: QuantConfig = dataclasses.field(default_factory=QuantConfig)


def run_quantize(cfg: QuantizeJobConfig) -> Path:
    from svdtune.pipelines import load_pipeline

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


def load_quantized_pipeline(directory: str | Path, dtype: str = "float32", device: str = "cpu"):
    """The source pipeline of a `svdtune quantize` folder with its denoiser replaced by the
    quantized one (no recalibration)."""
    from svdtune.pipelines import load_pipeline

    manifest = json.loads((Path(directory) / "quant_manifest.json").read_text())
    pipe = load_pipeline(manifest["source"], dtype, device)
    attr = "transformer" if hasattr(pipe, "transformer") else "unet"
    setattr(pipe, attr, load_quantized(directory, getattr(pipe, attr)))
    return pipe
