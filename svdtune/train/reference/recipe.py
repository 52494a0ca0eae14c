"""Train the reference family from scratch: evaluator, VAE, UNet + text encoder, UNet refinement,
DiT; export.

    svdtune train-reference --config configs/reference/family.yaml [key=value ...]

Stages run in order; each one checkpoints and resumes, and a finished stage is skipped on the next
run, so the command can be re-run after an interruption. The export writes both pipelines and the
evaluator in fp16 (diffusers / hub-mixin format) to `export_dir`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from svdtune.config import atomic_write_text, save_config
from svdtune.data import world
from svdtune.eval import world_evaluator as ev
from svdtune.pipelines import WORLD_MARKER
from svdtune.train.reference import components as C
from svdtune.train.reference import stages as S
from svdtune.train.reference.stages import StageConfig


@dataclasses.dataclass
class FamilyConfig:
    seed: int = 0
    output_dir: str = "runs/reference"
    export_dir: str = "svdtune/assets/reference"
    n_scenes: int = 60000
    threads: int = 0  # 0: torch's default
    evaluator: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(1500, 64, 2e-3, 100))
    vae: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(800, 16, 5e-4, 50))
    unet: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(1200, 64, 4e-4, 100))
    # UNet alone, text encoder frozen, loss up-weighted on objects (stages.refine_unet)
    unet_refine: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(0, 64, 2e-4, 50))
    foreground_boost: float = 4.0  # object-latent loss weight of the UNet refinement and the DiT
    dit: StageConfig = dataclasses.field(default_factory=lambda: StageConfig(1000, 64, 4e-4, 100))


def _stage(out: Path, name: str, modules: dict, train) -> None:
    """Run `train()` unless the stage's final weights exist, then load them into `modules`."""
    final = {k: out / f"{name}.{k}.safetensors" for k in modules}
    if not all(p.is_file() for p in final.values()):
        start = time.time()
        for k, m in train().items():
            S.save_module(m, final[k])
        timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").is_file() else {}
        timings[name] = round(time.time() - start, 1)
        atomic_write_text(out / "timings.json", json.dumps(timings, indent=1))
    for k, m in modules.items():
        m.load_state_dict(load_file(final[k]))


def train_family(cfg: FamilyConfig) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    ckpt = out / "checkpoints"

    evaluator = ev.WorldEvaluator()
    _stage(out, "evaluator", {"model": evaluator},
           lambda: {"model": S.train_evaluator(cfg.evaluator, cfg.seed, ckpt / "evaluator")})

    vae = C.build_vae()
    _stage(out, "vae", {"model": vae}, lambda: {"model": S.train_vae(cfg.vae, cfg.seed, ckpt / "vae")})
    vae.eval().requires_grad_(False)
    cache = S.normalize_latents(vae, S.cache_latents(vae, cfg.n_scenes, cfg.seed, out / "latents.safetensors"))

    tokenizer = C.build_tokenizer(cfg.seed)
    text_encoder = C.build_text_encoder(tokenizer)
    unet = C.build_unet(C.latent_size(vae), text_encoder.config.hidden_size)

    def train_unet():
        u, te = S.train_unet(cfg.unet, cfg.seed, ckpt / "unet", vae, tokenizer, cache)
        return {"unet": u, "text_encoder": te}

    _stage(out, "unet", {"unet": unet, "text_encoder": text_encoder}, train_unet)
    text_encoder.eval().requires_grad_(False)
    if cfg.unet_refine.steps:
        _stage(out, "unet_refine", {"unet": unet}, lambda: {"unet": S.refine_unet(
            cfg.unet_refine, cfg.seed, ckpt / "unet_refine", unet, text_encoder, tokenizer, cache,
            cfg.foreground_boost)})
    unet.eval()

    dit = C.build_dit(C.latent_size(vae), text_encoder.config.hidden_size, text_encoder.config.projection_dim)
    _stage(out, "dit", {"dit": dit},
           lambda: {"dit": S.train_dit(cfg.dit, cfg.seed, ckpt / "dit", vae, tokenizer, text_encoder, cache,
                                            cfg.foreground_boost)})

    return export_family(Path(cfg.export_dir), evaluator, vae, tokenizer, text_encoder, unet, dit)


def export_family(export_dir: Path, evaluator, vae, tokenizer, text_encoder, unet, dit) -> Path:
    export_dir.mkdir(parents=True, exist_ok=True)
    half = C.fp16_copy
    C.unet_pipeline(half(unet), half(vae), half(text_encoder), tokenizer).save_pretrained(export_dir / "ref-unet")
    C.dit_pipeline(half(dit), half(vae), half(text_encoder), tokenizer).save_pretrained(export_dir / "ref-dit")
    marker = {"world": "svdtune reference world", "image_size": world.IMAGE_SIZE,
              "styles": list(world.STYLES), "held_out": sorted(map(list, world.HELD_OUT))}
    for name, kwargs in (("ref-unet", {}), ("ref-dit", C.DIT_PIPELINE_KWARGS)):
        atomic_write_text(export_dir / name / WORLD_MARKER, json.dumps(marker | {"pipeline_kwargs": kwargs}, indent=1))
    half(evaluator).save_pretrained(export_dir / "evaluator")
    return export_dir
