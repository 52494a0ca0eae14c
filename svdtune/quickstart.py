"""`svdtune quickstart`: the whole job on the reference models, ending with the evaluation report.

    ./launch.sh quickstart [key=value ...]     e.g. prompts_per_suite=24 models=[ref-dit]

1. the data stage for a world-style domain (its subset and rewrite pairs);
2. a short domain adapter on the 4-bit `adapter_model` (distillation + the domain loss);
3. a short prompt rewriter on the pairs, then plain vs rewritten prompts through that model;
4. SVDQuant W4A4 of each model (saved under quant/);
5. `svdtune eval` of 16-bit vs W4A4 vs W4A4 + adapter (eval/: results.json, plots, grids).
Writes report.md (all of it), results.json and the resolved config to output_dir.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from svdtune.config import CONFIGS, atomic_write_text, load_config, save_config
from svdtune.eval.cost import measure
from svdtune.eval.grid import save_grid
from svdtune.eval.world_bench import METRICS, SUITES
from svdtune.generate import slug
from svdtune.quant import CalibrationConfig, QuantConfig

REWRITE_GRID = "rewrites.png"
# what the quickstart's adapter and rewriter runs start from
ADAPTER_CONFIG = CONFIGS / "train" / "ref-unet-pastel.yaml"
REWRITER_CONFIG = CONFIGS / "rewriter" / "world.yaml"


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
    # W4A4 SVDQuant of each model, calibrated on world captions (quantize: false skips it).
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
    # A short prompt-rewriter run on the domain's pairs, then plain vs rewritten prompts through the
    # 4-bit model with the adapter (0 steps skips it).
    rewriter_steps: int = 30
    rewriter_prompts: int = 16
    rewriter_overrides: list[str] = dataclasses.field(default_factory=list)  # key=value for RewriterTrainConfig

    def validate(self):
        for s in self.suites:
            if s not in SUITES:
                raise ValueError(f"suites: {s!r} is not a prompt suite; expected one of {', '.join(SUITES)}")
        for key in ("steps", "prompts_per_suite", "latency_repeats"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        for steps, path in (("adapter_steps", ADAPTER_CONFIG), ("rewriter_steps", REWRITER_CONFIG)):
            if getattr(self, steps) and not path.is_file():  # found now, not after the data stage
                raise ValueError(f"{steps}: its config {path} is missing (svdtune runs from its repository)")


def run_quickstart(cfg: QuickstartConfig) -> Path:
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    results = {}
    adapter_run = None
    if cfg.domain:
        results["data"] = domain_data(cfg, out / "data")
        if cfg.adapter_steps:
            results["adapter"] = domain_adapter(cfg, results["data"]["subset"]["dir"], out / "adapter")
            adapter_run = results["adapter"]["dir"]
        if cfg.rewriter_steps:
            results["rewriter"] = domain_rewriter(cfg, results["data"]["pairs"]["dir"], out / "rewriter", adapter_run,
                                                  out / REWRITE_GRID)
    variants = []
    for model in cfg.models:
        name = Path(model).name
        variants.append(f"{name} 16-bit={model}")
        if cfg.quantize:
            variants.append(f"{name} W4A4={quantize_model(cfg, model, out / 'quant' / slug(name))}")
    if adapter_run:
        variants.append(f"{Path(cfg.adapter_model).name} W4A4 + {cfg.domain}={adapter_run}")
    results["eval"] = evaluate(cfg, variants, out / "eval")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    atomic_write_text(out / "report.md", report(results, cfg))
    return out


def quantize_model(cfg: QuickstartConfig, model: str, folder: Path) -> Path:
    """SVDQuant W4A4 of the model's denoiser, saved (its manifest records the time it took)."""
    from svdtune.pipelines import load_pipeline
    from svdtune.quant import quantize, save_quantized

    pipe = load_pipeline(model, cfg.dtype, cfg.device)
    save_quantized(quantize(pipe, cfg.quant), folder, source=model)
    return folder


def evaluate(cfg: QuickstartConfig, variants: list[str], out: Path) -> dict:
    from svdtune.eval.harness import EvalConfig, run_eval

    sets = cfg.suites + ([f"domain:{cfg.domain}"] if cfg.domain else [])
    run = run_eval(load_config(EvalConfig, None, [
        f"variants={json.dumps(variants)}", f"prompts={json.dumps(sets)}", f"prompts_per_set={cfg.prompts_per_suite}",
        f"steps={cfg.steps}", f"guidance_scale={cfg.guidance_scale}", f"seed={cfg.seed}", f"batch_size={cfg.batch_size}",
        f"latency_repeats={cfg.latency_repeats}", f"dtype={cfg.dtype}", f"device={cfg.device}",
        f"evaluator={cfg.evaluator}", f"output_dir={out}"]))
    return json.loads((run / "results.json").read_text())


def domain_data(cfg: QuickstartConfig, out: Path) -> dict:
    """`data build` and `data pairs` for the world-style domain: what its adapter and rewriter train on."""
    from svdtune.config import load_config
    from svdtune.data.build import DataBuildConfig, run_data_build
    from svdtune.data.pairs import DataPairsConfig, run_data_pairs

    common = [f"domain={cfg.domain}", f"sources={{world: '{cfg.domain_scenes}'}}"]
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
        run = train_adapter(load_config(TrainConfig, ADAPTER_CONFIG, [
            f"model={cfg.adapter_model}", f"output_dir={out}", f"domain.data={data_dir}", f"steps={cfg.adapter_steps}",
            "distill.prompts=64", "validation.every=0", "save_every=100", "log_with=none", f"device={cfg.device}",
            *cfg.adapter_overrides]))
    summary = json.loads((run / "summary.json").read_text())
    return {"dir": str(run), "steps": cfg.adapter_steps, "seconds": cost.seconds, "peak_mib": cost.peak_mib,
            "before": summary["validation_start"], "after": summary["validation"], "loss": summary["last"]["loss"]}


def domain_rewriter(cfg: QuickstartConfig, pairs_dir: str, out: Path, adapter_run: str | None, grid: Path) -> dict:
    """`svdtune train-rewriter` for a few steps on the domain's pairs; then the held-out plain
    prompts and their rewrites through the 4-bit model with the adapter (same seeds), scored."""
    from svdtune.config import load_config
    from svdtune.eval import variants
    from svdtune.eval.rewrites import rewrite_effect
    from svdtune.pipelines import load_evaluator
    from svdtune.rewrite.rewriter import Rewriter
    from svdtune.train.rewriter import RewriterTrainConfig, load_pairs, train_rewriter

    with measure(cfg.device) as cost:
        run = train_rewriter(load_config(RewriterTrainConfig, REWRITER_CONFIG, [
            f"data=[{pairs_dir}]", f"output_dir={out}", f"steps={cfg.rewriter_steps}", "eval_pairs=32",
            f"device={cfg.device}", *cfg.rewriter_overrides]))
    summary = json.loads((run / "summary.json").read_text())
    plains = load_pairs([pairs_dir], "val")["plain"][:cfg.rewriter_prompts]
    rewrites = [r.text for r in Rewriter.load(str(run)).rewrite(plains, cfg.domain)]
    result = {"dir": str(run), "steps": cfg.rewriter_steps, "seconds": cost.seconds, "held_out": summary["held_out"],
              "examples": list(zip(plains, rewrites))}
    if adapter_run:
        pipe = variants.load(variants.classify("adapter", adapter_run), device=cfg.device)
        effect = rewrite_effect(pipe, load_evaluator(cfg.evaluator or None), plains,
                                {"plain": plains, "rewritten": rewrites}, cfg.domain, cfg.steps,
                                cfg.guidance_scale, cfg.seed, cfg.batch_size)
        images = effect.pop("images")
        n = min(8, len(plains))
        save_grid(grid, np.concatenate([images["plain"][:n], images["rewritten"][:n]]),
                  [f"plain: {p}" for p in plains[:n]] + [f"rewritten: {r}" for r in rewrites[:n]], ncols=n, scale=3)
        result["end_to_end"] = effect
    return result


def rewriter_section(rewriter: dict | None, cfg: QuickstartConfig) -> list[str]:
    if not rewriter:
        return []
    h = rewriter["held_out"]
    lines = [f"## Prompt rewriter: {cfg.domain}", "",
             f"SmolLM2-135M-Instruct + LoRA, {rewriter['steps']} steps in {rewriter['seconds']:.0f} s (`{rewriter['dir']}`). "
             f"On {h['n']} held-out pairs: chrF {h['chrf']:.1f}, content words kept {h['retention']:.1f} %, "
             f"style terms in {h['style_rate']:.1f} % of rewrites.", "",
             "| plain prompt | rewritten |", "|---|---|",
             *[f"| {p} | {r} |" for p, r in rewriter["examples"][:6]], ""]
    e2e = rewriter.get("end_to_end")
    if e2e:
        keys = ("style", "colour", "shape", "count", "all_objects")
        lines += [f"Plain prompts vs their rewrites through the 4-bit {cfg.adapter_model} with the {cfg.domain} adapter "
                  "(same seeds; evaluator %, alignment against the plain prompt's objects):", "",
                  "| prompts | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys),
                  *[f"| {name} | " + " | ".join(f"{e2e[name][k]:.1f}" for k in keys) + " |" for name in ("plain", "rewritten")],
                  "", f"![plain vs rewritten]({REWRITE_GRID})", ""]
    return lines


def report(results: dict, cfg: QuickstartConfig) -> str:
    from svdtune.eval.report import render_report

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
    intro = [f"{cfg.prompts_per_suite} prompts per set, {cfg.steps} steps, guidance {cfg.guidance_scale}, seed {cfg.seed}, "
             f"{cfg.dtype} on {cfg.device} ({torch.get_num_threads()} threads).", "",
             *data_section, *adapter_section, *rewriter_section(results.get("rewriter"), cfg)]
    return render_report(results["eval"], "svdtune quickstart", preface=intro, link_prefix="eval/")
