"""`svdtune quickstart`: generate a fixed prompt set with each reference model, score it, report.

    ./launch.sh quickstart [key=value ...]     e.g. prompts_per_suite=24 models=[ref-dit]

Writes report.md (alignment and cost tables), results.json, one captioned grid PNG per model and
the resolved config to output_dir.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
from pathlib import Path

import numpy as np
import torch

from svdtune.config import atomic_write_text, save_config
from svdtune.eval.cost import measure
from svdtune.eval.grid import save_grid
from svdtune.eval.metrics import psnr
from svdtune.eval.world_bench import SUITES, alignment, prompt_suite, render_scenes
from svdtune.generate import generate_images, slug
from svdtune.pipelines import call_kwargs
from svdtune.quant import CalibrationConfig, QuantConfig, quantize, size_summary
from svdtune.quant.quantize import denoiser_of

METRICS = ("colour", "shape", "size", "position", "all")


@dataclasses.dataclass
class QuickstartConfig:
    models: list[str] = dataclasses.field(default_factory=lambda: ["ref-unet", "ref-dit"])
    evaluator: str = ""  # world evaluator folder; empty: the shipped one
    suites: list[str] = dataclasses.field(default_factory=lambda: ["single", "two", "held-out single"])
    prompts_per_suite: int = 16
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0
    batch_size: int = 16
    latency_repeats: int = 3
    dtype: str = "float32"
    device: str = "cpu"
    output_dir: str = "runs/quickstart"
    # W4A4 SVDQuant of each model, calibrated on world captions, run on the same prompts and seeds
    # (quantize: false skips it).
    quantize: bool = True
    quant: QuantConfig = dataclasses.field(default_factory=lambda: QuantConfig(
        calibration=CalibrationConfig(prompts=32, steps=20, guidance=4.0, batch_size=32)))
    # The data stage for one world-style domain: its subset and rewrite pairs ("" skips it).
    domain: str = "pastel"
    domain_scenes: int = 400  # world scenes per style read by the data stage
    # A short domain-adapter run on the 4-bit model (both objectives; 0 steps skips it).
    adapter_model: str = "ref-unet"
    adapter_steps: int = 200
    adapter_overrides: list[str] = dataclasses.field(default_factory=list)  # key=value for its TrainConfig

    def validate(self):
        for s in self.suites:
            if s not in SUITES:
                raise ValueError(f"suites: {s!r} is not a prompt suite; expected one of {', '.join(SUITES)}")
        if self.steps <= 0 or self.prompts_per_suite <= 0 or self.latency_repeats <= 0:
            raise ValueError("steps, prompts_per_suite and latency_repeats must be positive integers")


def grid_name(model: str) -> str:
    return f"{slug(Path(model).name)}-grid.png"


def model_cost(pipe, steps: int, repeats: int, device: str, disk_mib: float | None = None) -> dict:
    """Warm single-image latency (median), per-step time from a 1-step vs `steps`-step difference."""
    def timed(n_steps):
        runs = []
        for r in range(repeats):
            with measure(device) as cost:
                pipe(prompt="a large red circle in the center, on a white background", num_inference_steps=n_steps,
                     generator=torch.Generator().manual_seed(r), output_type="np", **call_kwargs(pipe))
            runs.append(cost)
        return statistics.median(c.seconds for c in runs), max(c.peak_bytes for c in runs)

    timed(1)  # warm-up
    one, _ = timed(1)
    full, peak = timed(steps)
    denoiser = denoiser_of(pipe)
    folder = Path(pipe.config._name_or_path) if hasattr(pipe.config, "_name_or_path") else None
    return {
        "latency_s": full, "step_ms": 1000 * (full - one) / max(steps - 1, 1), "peak_rss_mib": peak / 2**20,
        "denoiser_params_m": sum(p.numel() for p in denoiser.parameters()) / 1e6,
        "disk_mib": disk_mib if disk_mib is not None else
        sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20 if folder and folder.is_dir() else None,
    }


def run_quickstart(cfg: QuickstartConfig) -> Path:
    from svdtune.pipelines import load_evaluator, load_pipeline

    out = Path(cfg.output_dir)
    save_config(cfg, out)
    evaluator = load_evaluator(cfg.evaluator or None)
    suites = {name: prompt_suite(name, cfg.prompts_per_suite) for name in cfg.suites}
    prompts = {name: [s.detailed_caption() for s in scenes] for name, scenes in suites.items()}
    results = {"alignment": {"rendered (ceiling)": {n: alignment(evaluator, render_scenes(s), prompts[n])
                                                    for n, s in suites.items()}}, "cost": {}}
    results["quantized"] = {}
    if cfg.domain:
        results["data"] = domain_data(cfg, out / "data")
        if cfg.adapter_steps:
            results["adapter"] = domain_adapter(cfg, results["data"]["subset"]["dir"], out / "adapter")
    for model in cfg.models:
        pipe = load_pipeline(model, cfg.dtype, cfg.device)
        results["cost"][model] = model_cost(pipe, cfg.steps, cfg.latency_repeats, cfg.device)
        images = {"16-bit": run_suites(pipe, prompts, cfg)}
        results["alignment"][model] = score_suites(evaluator, images["16-bit"], prompts)
        if cfg.quantize:  # quantize the denoiser in place, then the same prompts and seeds again
            key = f"{model} W4A4"
            with measure(cfg.device) as qcost:
                denoiser = quantize(pipe, cfg.quant)
            size = size_summary(denoiser)
            results["cost"][key] = model_cost(pipe, cfg.steps, cfg.latency_repeats, cfg.device,
                                              size["denoiser_quantized_bytes"] / 2**20)
            images["W4A4"] = run_suites(pipe, prompts, cfg)
            results["alignment"][key] = score_suites(evaluator, images["W4A4"], prompts)
            results["quantized"][key] = {
                "seconds": qcost.seconds, "peak_mib": qcost.peak_mib, "layers": len(denoiser.svdtune_quant.layers),
                "layers_ratio": size["layers_ratio"],
                "psnr_vs_16bit": float(np.mean([psnr(images["W4A4"][n], images["16-bit"][n]).mean() for n in prompts])),
            }
        # 16-bit and W4A4 rows of each suite next to each other
        rows = [(label, name) for name in prompts for label in images]
        save_grid(out / grid_name(model), np.concatenate([images[label][name][:8] for label, name in rows]),
                  [f"{label}: {p}" for label, name in rows for p in prompts[name][:8]], ncols=8, scale=3)
        del pipe
    results["settings"] = dataclasses.asdict(cfg) | {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                                    "machine": platform.processor() or platform.machine()}
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "report.md", report(results, cfg))
    return out


def domain_data(cfg: QuickstartConfig, out: Path) -> dict:
    """`data build` and `data pairs` for the world-style domain: what its adapter and rewriter train on."""
    from svdtune.config import load_config
    from svdtune.data.build import DataBuildConfig, run_data_build
    from svdtune.data.pairs import DataPairsConfig, run_data_pairs

    # World captions differ in a word or two (a position, a size): only exact repeats are duplicates.
    common = [f"domain={cfg.domain}", f"sources={{world: '{cfg.domain_scenes}'}}", "near_duplicate=0.995"]
    subset = run_data_build(load_config(DataBuildConfig, None, common + [f"output_dir={out / cfg.domain}"]))
    pairs = run_data_pairs(load_config(DataPairsConfig, None, common + [f"output_dir={out / (cfg.domain + '-pairs')}"]))
    built, paired = (json.loads((d / "report.json").read_text()) for d in (subset, pairs))
    from datasets import load_from_disk

    example = load_from_disk(str(pairs / "dataset"))["train"][0]
    return {"domain": cfg.domain, "subset": {"train": built["train"], "val": built["val"], "dir": str(subset)},
            "pairs": {"train": paired["train"], "val": paired["val"], "dir": str(pairs)},
            "read": built["counts"]["world"]["read"], "example_pair": [example["plain"], example["styled"]]}


def domain_adapter(cfg: QuickstartConfig, data_dir: str, out: Path) -> dict:
    """`svdtune train` for a few hundred steps: distillation plus the domain loss on the subset."""
    from svdtune.config import load_config
    from svdtune.train.config import TrainConfig
    from svdtune.train.recipe import train_adapter

    with measure(cfg.device) as cost:
        run = train_adapter(load_config(TrainConfig, "configs/train/ref-unet-pastel.yaml", [
            f"model={cfg.adapter_model}", f"output_dir={out}", f"domain.data={data_dir}", f"steps={cfg.adapter_steps}",
            "distill.prompts=64", "validation.every=0", "save_every=100", "log_with=none", f"device={cfg.device}",
            *cfg.adapter_overrides]))
    summary = json.loads((run / "summary.json").read_text())
    return {"dir": str(run), "steps": cfg.adapter_steps, "seconds": cost.seconds, "peak_mib": cost.peak_mib,
            "before": summary["validation_start"], "after": summary["validation"], "loss": summary["last"]["loss"]}


def run_suites(pipe, prompts: dict[str, list[str]], cfg: QuickstartConfig) -> dict[str, np.ndarray]:
    return {name: generate_images(pipe, p, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size)[0]
            for name, p in prompts.items()}


def score_suites(evaluator, images: dict[str, np.ndarray], prompts: dict[str, list[str]]) -> dict:
    return {name: alignment(evaluator, images[name], p) for name, p in prompts.items()}


def alignment_table(alignment_results: dict) -> str:
    lines = ["| model | suite | " + " | ".join(METRICS) + " |", "|---|---|" + "---:|" * len(METRICS)]
    for model, by_suite in alignment_results.items():
        for suite, m in by_suite.items():
            lines.append(f"| {model} | {suite} | " + " | ".join(f"{m[k]:.1f}" for k in METRICS) + " |")
    return "\n".join(lines)


def report(results: dict, cfg: QuickstartConfig) -> str:
    cost = ["| model | denoiser params (M) | on disk (MiB) | latency / image (s) | per step (ms) | peak RSS (MiB) |",
            "|---|---:|---:|---:|---:|---:|"]
    for model, c in results["cost"].items():
        disk = f"{c['disk_mib']:.1f}" if c["disk_mib"] is not None else "-"
        cost.append(f"| {model} | {c['denoiser_params_m']:.2f} | {disk} | {c['latency_s']:.3f} | "
                    f"{c['step_ms']:.1f} | {c['peak_rss_mib']:.0f} |")
    quant = ["| model | PSNR vs 16-bit (dB) | quantized layers | their size vs 16-bit | calibrate + quantize (s) | peak RSS (MiB) |",
             "|---|---:|---:|---:|---:|---:|"]
    for model, q in results.get("quantized", {}).items():
        quant.append(f"| {model} | {q['psnr_vs_16bit']:.2f} | {q['layers']} | {q['layers_ratio']:.3f}x | "
                     f"{q['seconds']:.1f} | {q['peak_mib']:.0f} |")
    quant_section = ["## W4A4 (SVDQuant) against 16-bit, same prompts and seeds", "",
                     "Latency of W4A4 models is the fake-quant path (no fused kernel yet).", "", *quant, ""] \
        if results.get("quantized") else []
    data = results.get("data")
    data_section = [f"## Domain data: {data['domain']}", "",
                    f"From {data['read']} world records: a subset of {data['subset']['train']} train + "
                    f"{data['subset']['val']} val records (`{data['subset']['dir']}`) and {data['pairs']['train']} train + "
                    f"{data['pairs']['val']} val rewrite pairs (`{data['pairs']['dir']}`), for example", "",
                    f"> {data['example_pair'][0]!r} -> {data['example_pair'][1]!r}", ""] if data else []
    adapter = results.get("adapter")
    adapter_section = [f"## Domain adapter: {cfg.domain} on the 4-bit {cfg.adapter_model}", "",
                       f"{adapter['steps']} steps of distillation + domain loss in {adapter['seconds']:.0f} s "
                       f"(peak RSS {adapter['peak_mib']:.0f} MiB), adapter in `{adapter['dir']}/adapter`. "
                       "Evaluator scores (%) on the domain's validation captions:", "",
                       "| | style | " + " | ".join(METRICS) + " |", "|---|---:|" + "---:|" * len(METRICS),
                       *[f"| {label} | {m.get('style', float('nan')):.1f} | " + " | ".join(f"{m[k]:.1f}" for k in METRICS) + " |"
                         for label, m in (("W4A4, before", adapter["before"]), ("W4A4 + adapter", adapter["after"]))],
                       ""] if adapter else []
    return "\n".join([
        "# svdtune quickstart", "",
        f"{cfg.prompts_per_suite} prompts per suite, {cfg.steps} steps, guidance {cfg.guidance_scale}, seed {cfg.seed}, "
        f"{cfg.dtype} on {cfg.device} ({torch.get_num_threads()} threads).", "",
        "## Prompt alignment (world evaluator, % correct)", "",
        "`all`: every object has the right shape, colour, size and place, and nothing extra is drawn.", "",
        alignment_table(results["alignment"]), "",
        *quant_section,
        *data_section,
        *adapter_section,
        "## Cost (batch 1, warm, median)", "", *cost, "",
        "## Images (16-bit and W4A4 rows of each suite side by side)", "",
        *[f"![{m}]({grid_name(m)})" for m in cfg.models], "",
    ])
