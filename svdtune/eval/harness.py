"""`svdtune eval`: generate every prompt set with every model variant, score, cost and report.

    svdtune eval --config configs/eval/world.yaml [prompts_per_set=32 steps=30 ...]

Per variant: world alignment and style accuracy (world prompt sets), Fréchet distances against the
sets' reference images (FD-evaluator on the world, FD-AlexNet on any images, FID only with a local
Inception file), LPIPS / PSNR / SSIM against the 16-bit source model's images for the same prompts
and seeds, CLIP score and ImageReward when their weights are given, and cost (warm batch-1 latency
per image and per step, peak memory, sizes, quantization time). Writes results.json, report.md,
plots/*.png, grids/*.png, images/*.safetensors (the generated images, for `svdtune compare`) and
the resolved config.yaml to output_dir. A killed eval, run again with the same config, resumes
after the variants it finished (progress.json).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from svdtune.config import atomic_write_text, save_config
from svdtune.eval import prompt_sets, variants
from svdtune.eval.cost import measure, pipeline_latency
from svdtune.eval.environment import environment
from svdtune.eval.features import alexnet_features
from svdtune.eval.frechet import frechet_distance
from svdtune.eval.images import load_images, resized, save_images, write_grids
from svdtune.eval.metrics import lpips, psnr, ssim
from svdtune.eval.world_bench import EVAL_SEED, alignment, evaluator_features
from svdtune.generate import generate_images, slug

RESULTS_VERSION = 1
PROGRESS = "progress.json"  # the finished variants' records: a killed eval resumes after them
log = logging.getLogger("svdtune")


@dataclasses.dataclass
class EvalConfig:
    # label=spec: a reference name or diffusers folder (16-bit), a quantize folder or svdq export
    # (W4A4), a training run folder (W4A4 + adapter; RUN:0 = adapter off, RUN:0.5 = half strength)
    variants: list[str] = dataclasses.field(default_factory=lambda: ["16-bit=ref-unet"])
    # suite names (single, two, held-out single, held-out two), domain:STYLE, file:PATH, data:DIR
    prompts: list[str] = dataclasses.field(default_factory=lambda: ["single", "two"])
    prompts_per_set: int = 16      # at most this many prompts per set (0: all of a file or data split)
    steps: int = 20
    guidance_scale: float = 4.0
    seed: int = 0                  # image i of every set uses seed + i, for every variant
    batch_size: int = 16
    dtype: str = "float32"
    device: str = "cpu"
    backend: str = "auto"          # kernel of quantized layers (svdtune.kernels.dispatch.BACKENDS)
    evaluator: str = ""            # world evaluator folder; "": the shipped one
    latency_repeats: int = 3       # warm batch-1 timings per variant (median); 0 skips latency
    clip_model: str = ""           # local transformers CLIPModel folder: CLIP score
    inception: str = ""            # local TorchScript FID Inception (inception-2015-12-05.pt): FID
    image_reward: str = ""         # local ImageReward.pt (med_config.json beside it): ImageReward
    grid_rows: int = 4             # prompts per set shown in the image grids
    output_dir: str = "runs/eval"

    def validate(self):
        from svdtune.kernels.dispatch import BACKENDS
        from svdtune.pipelines import DTYPES

        if not self.variants:
            raise ValueError("variants must list at least one label=spec")
        if not self.prompts:
            raise ValueError("prompts must list at least one prompt set")
        for key in ("steps", "batch_size", "grid_rows"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        for key in ("prompts_per_set", "latency_repeats"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")


def run_eval(cfg: EvalConfig) -> Path:
    from svdtune.eval import optional_metrics
    from svdtune.eval.report import render_report, write_plots

    start = time.perf_counter()
    models = variants.parse_all(cfg.variants)  # bad specs stop here, before any model loads
    sets = prompt_sets.parse_all(cfg.prompts, cfg.prompts_per_set)
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    extra = optional_metrics.load(cfg)  # CLIP / FID / ImageReward scorers, or one-line notes
    evaluator, notes = _evaluator(cfg, sets, models)
    notes += extra.notes
    reference = _reference(sets, evaluator, extra)
    results = {
        "results_version": RESULTS_VERSION, "environment": environment(cfg.device),
        "settings": dataclasses.asdict(cfg),
        "seeds": {"images": f"image i of every prompt set uses seed {cfg.seed} + i, for every variant",
                  "world_suites": EVAL_SEED},
        "prompt_sets": {s.name: {"spec": s.spec, "kind": s.kind, "prompts": s.prompts,
                                 "seeds": [cfg.seed + i for i in range(len(s.prompts))],
                                 "reference": s.reference_source} for s in sets},
        "reference": reference["summary"], "variants": {}, "notes": notes,
    }
    sources: dict[str, dict[str, np.ndarray]] = {}  # 16-bit images per source pipeline
    order = sorted(models, key=lambda v: not v.is_16bit)  # 16-bit first: they are the others' sources
    total = sum(len(s.prompts) for s in sets) * len(models)
    finished, notes = _finished_variants(out / PROGRESS, results["settings"])
    results["notes"] = notes or results["notes"]  # a resumed run's notes: the start's and those made since
    with tqdm(total=total, desc="eval", unit="image") as bar:
        for v in order:
            if v.label in finished:  # done by a killed run of this config: its record and (8-bit) images stand
                record = finished[v.label]
                images = load_images(out, record)
                bar.update(sum(len(s.prompts) for s in sets))
            else:
                images, record = _run_variant(cfg, models.index(v), v, sets, bar)
            if v.is_16bit:
                sources.setdefault(v.source, images)
            if v.label not in finished:
                if not v.is_16bit and v.source not in sources:
                    sources[v.source] = _source_images(cfg, v, sets)
                    results["notes"].append(f"The 16-bit images of {v.source} (source of {v.label}) were "
                                            "generated for the comparison; it is not among the variants.")
                record |= _scores(v, images, sets, sources.get(v.source), evaluator, reference, extra)
                save_images(out / record["images"], images, v.label)
            results["variants"][v.label] = record
            atomic_write_text(out / PROGRESS, json.dumps({"settings": results["settings"], "notes": results["notes"],
                                                          "variants": results["variants"]}, indent=1))
    results["variants"] = {v.label: results["variants"][v.label] for v in models}  # config order
    write_grids(out, results, [("", out, results)], cfg.grid_rows)
    write_plots(out, results)
    results["seconds"] = time.perf_counter() - start
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "report.md", render_report(results, "svdtune eval"))
    (out / PROGRESS).unlink()
    return out


def _finished_variants(path: Path, settings: dict) -> tuple[dict[str, dict], list[str]]:
    """The records (label -> record) of the variants a killed eval finished, and its notes, when
    `path` (written after each variant) was written with these settings."""
    try:
        progress = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:  # written atomically, so only a hand-edit breaks it: start over
        progress = {}
    if progress.get("settings") != json.loads(json.dumps(settings)):
        return {}, []
    finished = {label: r for label, r in progress["variants"].items() if (path.parent / r["images"]).is_file()}
    if finished:
        log.info("resuming %s: %s already evaluated", path.parent, ", ".join(finished))
    return finished, progress["notes"]


def _evaluator(cfg: EvalConfig, sets, models):
    """The world evaluator when some prompt set is in the world's words and some variant is a world
    model; else None and a note why world metrics are absent."""
    from svdtune.errors import UserError
    from svdtune.pipelines import is_world_model, load_evaluator

    if not any(s.is_world for s in sets):
        return None, ["World alignment and FD-evaluator: no prompt set is in the reference world's words."]
    if not any(is_world_model(v.source) for v in models):
        return None, ["World alignment and FD-evaluator: no variant is a reference-world model."]
    try:
        return load_evaluator(cfg.evaluator or None), []
    except UserError:
        if cfg.evaluator:
            raise
        return None, ["World alignment and FD-evaluator: the world evaluator is not installed (train-reference)."]


def _reference(sets, evaluator, extra) -> dict:
    """Features of the sets' reference images, and the scores the references themselves get: their
    alignment (the evaluator's ceiling) and the Fréchet distance of an independent second draw (the
    sampling floor at this number of images)."""
    with_ref = [s for s in sets if s.reference is not None]
    world_ref = [s for s in with_ref if s.is_world and evaluator is not None]
    summary: dict = {"alignment": {}, "fd": {}, "fd_images": {}}
    feats: dict = {}
    if world_ref:
        images = np.concatenate([s.reference for s in world_ref])
        summary["alignment"] = {s.name: alignment(evaluator, s.reference, s.prompts) for s in world_ref}
        feats["FD-evaluator"] = (evaluator_features(evaluator, images), [s.name for s in world_ref])
    if with_ref:
        feats["FD-AlexNet"] = (alexnet_features(_same_size(with_ref)), [s.name for s in with_ref])
    if extra.inception and with_ref:
        feats["FID"] = (None, [s.name for s in with_ref])
    for name, (ref_feats, set_names) in feats.items():
        chosen = [s for s in with_ref if s.name in set_names]
        summary["fd_images"][name] = sum(len(s.prompts) for s in chosen)
        if all(s.resample for s in chosen) and name != "FID":
            again = [s.resample() for s in chosen]
            other = evaluator_features(evaluator, np.concatenate(again)) if name == "FD-evaluator" else \
                alexnet_features(_same_size(chosen, again))
            summary["fd"][name] = frechet_distance(other, ref_feats)
    return {"summary": summary, "features": feats, "sets": with_ref}


def _same_size(chosen, arrays=None) -> torch.Tensor:
    """The sets' images as one N x 3 x S x S tensor (sets of different sizes resized to the largest)."""
    arrays = arrays if arrays is not None else [s.reference for s in chosen]
    side = max(a.shape[1] for a in arrays)
    return torch.cat([resized(a, side) for a in arrays])


def _run_variant(cfg: EvalConfig, index: int, v, sets, bar) -> tuple[dict[str, np.ndarray], dict]:
    """Load, generate every set, time and size one variant; the pipeline is freed on return."""
    bar.set_postfix_str(f"loading {v.label}")
    images, per_image = {}, []
    with measure(cfg.device) as block:  # what loading and generating this variant added to the memory in use
        load_start = time.perf_counter()
        pipe = variants.load(v, cfg.dtype, cfg.device, cfg.backend)
        load_s = time.perf_counter() - load_start
        # One untimed step at the batch shape: lazy kernels and compilation (Triton) are not throughput.
        bar.set_postfix_str(f"{v.label}: warm-up")
        generate_images(pipe, sets[0].prompts[:cfg.batch_size], 1, cfg.guidance_scale, cfg.seed, cfg.batch_size)
        for s in sets:
            bar.set_postfix_str(f"{v.label}: {s.name}")
            images[s.name], seconds = generate_images(pipe, s.prompts, cfg.steps, cfg.guidance_scale, cfg.seed,
                                                      cfg.batch_size)
            per_image += seconds
            bar.update(len(s.prompts))
    cost = {"load_s": load_s, "batch_image_s": statistics.median(per_image), "batch_size": cfg.batch_size,
            "variant_added_mib": block.added_mib, "image_s": None, "step_ms": None, "peak_mib": block.peak_mib,
            "memory": block.memory_kind}
    if cfg.latency_repeats:
        bar.set_postfix_str(f"{v.label}: latency")
        latency = pipeline_latency(pipe, cfg.steps, cfg.latency_repeats, cfg.device, prompt=sets[0].prompts[0],
                                   guidance_scale=cfg.guidance_scale)
        cost |= latency | {"peak_mib": max(block.peak_mib, latency["peak_mib"])}
    from svdtune.pipelines import denoiser_attr

    record = {"spec": v.spec, "kind": v.kind, "path": v.path, "source": v.source, "strength": v.strength,
              "ranks": variants.ranks(getattr(pipe, denoiser_attr(pipe))), "size": variants.sizes(v, pipe),
              "cost": cost, "images": f"images/{index:02d}-{slug(v.label, 64)}.safetensors"}
    del pipe
    gc.collect()
    return images, record


def _source_images(cfg: EvalConfig, v, sets) -> dict[str, np.ndarray]:
    pipe = variants.load(variants.Variant(f"{v.label} source", v.source, "16-bit", v.source, v.source), cfg.dtype,
                         cfg.device)
    images = {s.name: generate_images(pipe, s.prompts, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size)[0]
              for s in sets}
    del pipe
    gc.collect()
    return images


def _scores(v, images, sets, source, evaluator, reference, extra) -> dict:
    from svdtune.pipelines import is_world_model

    out: dict = {"alignment": {}, "fd": {}, "vs_16bit": None}
    if evaluator is not None and is_world_model(v.source):
        out["alignment"] = {s.name: alignment(evaluator, images[s.name], s.prompts) for s in sets if s.is_world}
    for name, (ref_feats, set_names) in reference["features"].items():
        fake = [images[n] for n in set_names]
        if name == "FD-evaluator":
            out["fd"][name] = frechet_distance(evaluator_features(evaluator, np.concatenate(fake)), ref_feats)
        elif name == "FD-AlexNet":
            out["fd"][name] = frechet_distance(alexnet_features(_same_size(None, fake)), ref_feats)
        else:
            from svdtune.eval.inception import fid

            chosen = [s for s in reference["sets"] if s.name in set_names]
            out["fd"][name] = fid(extra.inception, _same_size(chosen), _same_size(None, fake))
    if source is not None and not v.is_16bit:  # the SVDQuant protocol: same prompts and seeds, 16-bit images
        a = np.concatenate([images[s.name] for s in sets])
        b = np.concatenate([source[s.name] for s in sets])
        out["vs_16bit"] = {"LPIPS": lpips(a, b).mean().item(), "PSNR": _finite_mean(psnr(a, b)),
                           "SSIM": ssim(a, b).mean().item()}
    all_images = np.concatenate([images[s.name] for s in sets])
    all_prompts = [p for s in sets for p in s.prompts]
    if extra.clip is not None:
        out["clip_score"] = extra.clip(all_images, all_prompts).mean().item()
    if extra.image_reward is not None:
        out["image_reward"] = extra.image_reward(all_images, all_prompts).mean().item()
    return out


def _finite_mean(values: torch.Tensor) -> float:
    """Mean PSNR over images, identical images (infinite PSNR) left out; inf when all are identical."""
    finite = values[torch.isfinite(values)]
    return finite.mean().item() if len(finite) else float("inf")
