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

from svdtune.config import atomic_folder, atomic_write_text, read_json, save_config
from svdtune.data import world
from svdtune.errors import UserError
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


def _stage(out: Path, name: str, modules: dict, train, made_with: dict) -> None:
    """Run `train()` unless the stage's final weights exist, then load them into `modules`. A
    finished stage records what it was made with (`<name>.json`); re-running it with other
    settings is refused, naming the first that changed, rather than silently kept."""
    final = {k: out / f"{name}.{k}.safetensors" for k in modules}
    record = out / f"{name}.json"
    made_with = json.loads(json.dumps(made_with))
    if all(p.is_file() for p in final.values()):
        changed = _first_change(read_json(record), made_with) if record.is_file() else None
        if changed:
            key, old, new = changed
            raise UserError(f"{out}: the finished {name} stage was made with {key} = {old!r}, this config has "
                            f"{new!r}; delete {out}/{name}.* (and the later stages' files) to train it again, "
                            "or give another output_dir")
    else:
        start = time.time()
        for k, m in train().items():
            S.save_module(m, final[k])
        atomic_write_text(record, json.dumps(made_with, indent=1))
        timings = read_json(out / "timings.json") if (out / "timings.json").is_file() else {}
        timings[name] = round(time.time() - start, 1)
        atomic_write_text(out / "timings.json", json.dumps(timings, indent=1))
    for k, m in modules.items():
        m.load_state_dict(load_file(final[k]))


def _first_change(old, new, key: str = "") -> tuple[str, object, object] | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            found = _first_change(old.get(k), new.get(k), f"{key}.{k}" if key else k)
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


def _settings(cfg: FamilyConfig, *stages: str, **extra) -> dict:
    """What a stage's weights depend on: the seed, its own and earlier stages' settings (save_every
    aside: when a checkpoint is written changes nothing) and `extra`."""
    def stage(name):
        return {k: v for k, v in dataclasses.asdict(getattr(cfg, name)).items() if k != "save_every"}

    return {"seed": cfg.seed, **{name: stage(name) for name in stages}, **extra}


def train_family(cfg: FamilyConfig) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.output_dir)
    save_config(cfg, out)
    ckpt = out / "checkpoints"

    evaluator = ev.WorldEvaluator()
    _stage(out, "evaluator", {"model": evaluator},
           lambda: {"model": S.train_evaluator(cfg.evaluator, cfg.seed, ckpt / "evaluator")},
           _settings(cfg, "evaluator"))

    vae = C.build_vae()
    _stage(out, "vae", {"model": vae}, lambda: {"model": S.train_vae(cfg.vae, cfg.seed, ckpt / "vae")},
           _settings(cfg, "vae"))
    vae.eval().requires_grad_(False)
    cache = S.normalize_latents(vae, S.cache_latents(vae, cfg.n_scenes, cfg.seed, out / "latents.safetensors"))

    tokenizer = C.build_tokenizer(cfg.seed)
    text_encoder = C.build_text_encoder(tokenizer)
    unet = C.build_unet(C.latent_size(vae), text_encoder.config.hidden_size)

    def train_unet():
        u, te = S.train_unet(cfg.unet, cfg.seed, ckpt / "unet", vae, tokenizer, cache)
        return {"unet": u, "text_encoder": te}

    _stage(out, "unet", {"unet": unet, "text_encoder": text_encoder}, train_unet,
           _settings(cfg, "vae", "unet", n_scenes=cfg.n_scenes))
    text_encoder.eval().requires_grad_(False)
    boost = cfg.foreground_boost
    if cfg.unet_refine.steps:
        _stage(out, "unet_refine", {"unet": unet}, lambda: {"unet": S.refine_unet(
            cfg.unet_refine, cfg.seed, ckpt / "unet_refine", unet, text_encoder, tokenizer, cache, boost)},
            _settings(cfg, "vae", "unet", "unet_refine", n_scenes=cfg.n_scenes, foreground_boost=boost))
    unet.eval()

    dit = C.build_dit(C.latent_size(vae), text_encoder.config.hidden_size, text_encoder.config.projection_dim)
    _stage(out, "dit", {"dit": dit},
           lambda: {"dit": S.train_dit(cfg.dit, cfg.seed, ckpt / "dit", vae, tokenizer, text_encoder, cache, boost)},
           _settings(cfg, "vae", "unet", "dit", n_scenes=cfg.n_scenes, foreground_boost=boost))

    return export_family(Path(cfg.export_dir), evaluator, vae, tokenizer, text_encoder, unet, dit)


def export_family(export_dir: Path, evaluator, vae, tokenizer, text_encoder, unet, dit) -> Path:
    """Each folder is written under a temporary name and swapped in whole (a killed export leaves
    the previous model, not half of the new one)."""
    export_dir.mkdir(parents=True, exist_ok=True)
    half = C.fp16_copy
    marker = {"world": "svdtune reference world", "image_size": world.IMAGE_SIZE,
              "styles": list(world.STYLES), "held_out": sorted(map(list, world.HELD_OUT))}

    for name, pipe, kwargs in (
            ("ref-unet", C.unet_pipeline(half(unet), half(vae), half(text_encoder), tokenizer), {}),
            ("ref-dit", C.dit_pipeline(half(dit), half(vae), half(text_encoder), tokenizer), C.DIT_PIPELINE_KWARGS)):
        with atomic_folder(export_dir / name) as tmp:
            pipe.save_pretrained(tmp)
            atomic_write_text(tmp / WORLD_MARKER, json.dumps(marker | {"pipeline_kwargs": kwargs}, indent=1))
    with atomic_folder(export_dir / "evaluator") as tmp:
        half(evaluator).save_pretrained(tmp)
    return export_dir
