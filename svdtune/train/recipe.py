"""`svdtune train`: a LoRA domain adapter on the SVDQuant W4A4 backbone.

    svdtune train --config configs/train/ref-unet-pastel.yaml [steps=500 resume=latest ...]
    ./launch.sh train --nproc 2 --config configs/train/ref-unet-pastel.yaml     # DDP on one node

Objectives (weights in the config, combinable): EfficientDM distillation on the 16-bit teacher's
sampling trajectories, and the diffusion loss on a domain subset from `svdtune data build`.
Every optimizer step's global batch is drawn from a generator seeded by (seed, step) and split
across processes and micro-steps, so a resumed run, a 2-process run and a 1-process run with the
doubled batch all see the same samples.

Writes to output_dir: config.yaml, backbone/ (the quantized denoiser unless `quantized` is given),
student-init.safetensors, cache/ (teacher trajectories, domain latents), checkpoints/step-N/,
validation/step-N.png, adapter/ (peft format; adapter-ema/ with EMA), summary.json.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm.auto import tqdm

from svdtune.config import atomic_write_text, save_config, to_dict
from svdtune.errors import UserError
from svdtune.pipelines import denoiser_attr, load_pipeline
from svdtune.quant.calibrate import caption_prompts
from svdtune.quant.quantize import denoiser_of, is_world_pipeline
from svdtune.train.config import TrainConfig
from svdtune.train.domain_data import DomainData, build_domain_data, captions_of, load_subset
from svdtune.train.lora import save_adapter, trainable_parameters
from svdtune.train.loop import (append_history, make_accelerator, make_optimizer, own_rows, peak_memory_mib,
                                register_adapter_hooks, resume, save_checkpoint, tracker_kwargs)
from svdtune.train.objectives import NoiseSchedule, denoising_loss, distillation_loss
from svdtune.train.student import build_student, optimizer_groups
from svdtune.train.trajectories import Trajectories, record_trajectories
from svdtune.train.validation import validate

log = logging.getLogger("svdtune")


def train_adapter(cfg: TrainConfig) -> Path:
    out = Path(cfg.output_dir)
    acc = make_accelerator(cfg, out)
    main = acc.is_main_process
    if main:
        save_config(cfg, out)
    teacher = load_pipeline(cfg.model, cfg.dtype, str(acc.device))
    denoiser_of(teacher).requires_grad_(False)
    prompts = distill_prompts(cfg, teacher)
    # Calibration: the world's own captions for reference models, else the first training prompts.
    calibration = None if is_world_pipeline(teacher) else prompts[:cfg.quant.calibration.prompts]
    student = build_student(cfg, teacher, out, main, acc.wait_for_everyone, calibration)
    if cfg.gradient_checkpointing:
        student.enable_gradient_checkpointing()

    trajectories = domain = schedule = None
    if cfg.distill.weight:
        trajectories = cached(out / "cache" / "trajectories.safetensors", Trajectories.load,
                              lambda: record_trajectories(teacher, prompts, cfg.distill.steps,
                                                          cfg.distill.guidance, cfg.seed, cfg.distill.batch_size,
                                                          cfg.model), acc,
                              {"model": cfg.model, "prompts": len(prompts), "steps": cfg.distill.steps,
                               "guidance": cfg.distill.guidance, "seed": cfg.seed})
    if cfg.domain.weight:
        domain = cached(out / "cache" / "domain.safetensors", DomainData.load,
                        lambda: build_domain_data(teacher, cfg.domain.data, cfg.domain.caption, cfg.domain.max_images),
                        acc, {"source": str(cfg.domain.data), "caption": cfg.domain.caption})
        if cfg.domain.foreground_boost and "foreground" not in domain.tensors:
            raise UserError(f"{out / 'cache' / 'domain.safetensors'} has no foreground maps (made before they "
                            "were cached), which domain.foreground_boost needs: delete it to rebuild it")
        schedule = NoiseSchedule.from_pipeline(teacher, cfg.domain.timesteps)

    # The teacher's denoiser is done (its trajectories are cached): free its memory. The pipeline
    # keeps the VAE and text encoders for validation, which runs the student in its place.
    setattr(teacher, denoiser_attr(teacher), None)
    params = trainable_parameters(student, cfg.lora.act_clip)
    optimizer = make_optimizer(optimizer_groups(student, params, cfg), cfg)
    from diffusers.optimization import get_scheduler

    lr_schedule = get_scheduler(cfg.optim.schedule, optimizer, num_warmup_steps=cfg.optim.warmup,
                                num_training_steps=cfg.steps)
    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(params, decay=cfg.ema_decay)
    student, optimizer, lr_schedule = acc.prepare(student, optimizer, lr_schedule)
    student.train()  # LoRA dropout and gradient checkpointing act in train mode only
    register_adapter_hooks(acc, cfg.adapter_name, ema)
    acc.init_trackers("svdtune", config=to_dict(cfg), init_kwargs=tracker_kwargs(cfg, out))
    start = resume(acc, cfg, out)
    if ema is not None:  # the load hook restored the shadow weights; the decay's warm-up goes on from here
        ema.optimization_step = start
    if main and start == 0:
        (out / "history.jsonl").unlink(missing_ok=True)
    # Rank 0 alone keeps the loss curve: it computes it on the unwrapped model (no DDP collective).
    fixed_loss = lambda: fixed_distill_loss(acc.unwrap_model(student), trajectories,  # noqa: E731
                                            cfg.validation.loss_samples, acc.device)
    if start == 0 and cfg.validation.at_start:
        run_validation(acc, cfg, teacher, student, 0, out)
        if trajectories is not None and main:
            append_history(out, {"step": 0, "distill_loss_fixed": fixed_loss()})

    global_batch = cfg.batch_size * acc.num_processes * cfg.grad_accum
    bar = tqdm(range(start, cfg.steps), desc="train", initial=start, total=cfg.steps, disable=not main, mininterval=5)
    for step in bar:
        began = time.perf_counter()
        batch = draw_batch(cfg, step, global_batch, trajectories, domain)
        totals: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            part = {k: v[own_rows(micro, acc.process_index, acc.num_processes, cfg.batch_size)] for k, v in batch.items()}
            sync = micro == cfg.grad_accum - 1
            with (nullcontext() if sync else acc.no_sync(student)), acc.autocast():
                losses = step_losses(cfg, student, part, trajectories, domain, schedule, acc.device)
            acc.backward(losses["loss"] / cfg.grad_accum)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item() / cfg.grad_accum
        grad_norm = acc.clip_grad_norm_(params, cfg.optim.max_grad_norm)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(params)
        seconds = time.perf_counter() - began
        record = totals | {"lr": lr_schedule.get_last_lr()[0], "grad_norm": float(grad_norm), "step_time": seconds,
                           "samples_per_s": global_batch / seconds, "peak_memory_mib": peak_memory_mib(acc.device)}
        every = cfg.validation.loss_every
        if main and trajectories is not None and every and (step + 1) % every == 0:
            record["distill_loss_fixed"] = fixed_loss()
        if main:
            append_history(out, {"step": step + 1} | record)
        bar.set_postfix(loss=f"{totals['loss']:.4f}", refresh=False)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            acc.log(record, step=step + 1)
        if cfg.validation.every and (step + 1) % cfg.validation.every == 0 and step + 1 < cfg.steps:
            run_validation(acc, cfg, teacher, student, step + 1, out)
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(acc, out, step + 1, cfg.keep_last)

    scores = run_validation(acc, cfg, teacher, student, cfg.steps, out)
    if main:
        model = acc.unwrap_model(student)
        save_adapter(model, out / "adapter", cfg.adapter_name)
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
            save_adapter(model, out / "adapter-ema", cfg.adapter_name)
            ema.restore(params)
        write_summary(out, cfg, scores)
    acc.wait_for_everyone()
    acc.end_training()
    return out


# ---------------------------------------------------------------- set-up

def cached(path: Path, load, make, acc, made_with: dict):
    """Load `path`, or make it on the main process (the others wait) and save it first. A file made
    with other settings than `made_with` (a resumed run whose config changed) is refused, not reused."""
    if not path.is_file() and acc.is_main_process:
        make().save(path)
    acc.wait_for_everyone()
    data = load(path)
    for key, wanted in made_with.items():
        if data.meta.get(key) != wanted:
            raise UserError(f"{path} was made with {key}={data.meta.get(key)!r}, but this run asks for {wanted!r}: "
                            "delete it to rebuild it, or run in a new output_dir")
    return data


def distill_prompts(cfg: TrainConfig, teacher) -> list[str]:
    """Prompts for the teacher's trajectories: the prompt file; else, for reference models, plain
    world captions; else the domain data's captions.

    The reference models' domains are styles the teacher has never seen: distilling on their
    captions would pull the student back to the teacher's unstyled answer to exactly the prompts
    the domain loss teaches. Plain captions keep the student near the teacher elsewhere, which is
    EfficientDM's job. A real domain (food, landscape) is content the teacher draws, so its
    captions are good distillation prompts when no prompt file is given."""
    world = is_world_pipeline(teacher)
    if not cfg.distill.prompt_file and not world and cfg.domain.data:
        captions = captions_of(load_subset(cfg.domain.data))
        if not captions:
            raise UserError(f"domain.data {cfg.domain.data!r} has no training captions to distil on")
        return [captions[i % len(captions)] for i in range(cfg.distill.prompts)]
    return caption_prompts(cfg.distill.prompts, cfg.distill.prompt_file, world, cfg.seed + 60_000,
                           "distill.prompt_file")


# ---------------------------------------------------------------- batches and losses

def draw_batch(cfg: TrainConfig, step: int, size: int, trajectories: Trajectories | None,
               domain: DomainData | None) -> dict[str, torch.Tensor]:
    """Every random choice of optimizer step `step`, for the whole global batch."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    batch = {}
    if trajectories is not None:
        batch["traj_row"] = torch.randint(trajectories.rows, (size,), generator=g)
        batch["traj_step"] = torch.randint(trajectories.steps, (size,), generator=g)
    if domain is not None:
        latent_shape = domain.tensors["latents"].shape[1:]
        batch["domain_index"] = torch.randint(len(domain), (size,), generator=g)
        batch["domain_drop"] = torch.rand(size, generator=g) < cfg.domain.caption_dropout
        batch["domain_u"] = torch.rand(size, generator=g)
        batch["domain_noise"] = torch.randn((size, *latent_shape), generator=g)
    return batch


def step_losses(cfg: TrainConfig, student, part: dict, trajectories, domain, schedule, device) -> dict[str, torch.Tensor]:
    losses = {}
    if trajectories is not None:
        kwargs, target = trajectories.batch(part["traj_row"], part["traj_step"], device, torch.float32)
        losses["loss_distill"] = distillation_loss(student, kwargs, target)
    if domain is not None:
        kwargs, x0 = domain.batch(part["domain_index"], part["domain_drop"], device, torch.float32)
        xt, t, target, snr = schedule.noisy(x0, part["domain_noise"].to(device), part["domain_u"].to(device))
        kwargs |= {domain.meta["latent_key"]: xt, "timestep": t}
        fg = (1 + cfg.domain.foreground_boost * domain.foreground(part["domain_index"], device)
              if cfg.domain.foreground_boost else None)
        losses["loss_domain"] = denoising_loss(student, kwargs, target, schedule.weights(snr, cfg.domain.min_snr_gamma), fg)
    losses["loss"] = (cfg.distill.weight * losses.get("loss_distill", 0.0)
                      + cfg.domain.weight * losses.get("loss_domain", 0.0))
    return losses


@torch.no_grad()
def fixed_distill_loss(student, trajectories: Trajectories | None, n: int, device, chunk: int = 16) -> float:
    """Mean distillation loss on the same `n` trajectory points every time it is called: a
    noise-free curve to compare runs (e.g. adapter inits) by."""
    g = torch.Generator().manual_seed(12_345)
    rows, steps = torch.randint(trajectories.rows, (n,), generator=g), torch.randint(trajectories.steps, (n,), generator=g)
    was_training = student.training
    student.eval()
    total = 0.0
    for i in range(0, n, chunk):
        kwargs, target = trajectories.batch(rows[i:i + chunk], steps[i:i + chunk], device, torch.float32)
        total += distillation_loss(student, kwargs, target).item() * len(rows[i:i + chunk])
    student.train(was_training)
    return total / n


# ---------------------------------------------------------------- validation and summary

def run_validation(acc, cfg: TrainConfig, teacher, student, step: int, out: Path) -> dict:
    scores = {}
    if acc.is_main_process:
        path = out / "validation" / f"step-{step:07d}.png"
        scores = validate(cfg, teacher, acc.unwrap_model(student), path)
        atomic_write_text(path.with_suffix(".json"), json.dumps(scores, indent=1))
        acc.log({f"validation/{k}": v for k, v in scores.items()}, step=step)
        log_validation_image(acc, path, step)
    acc.wait_for_everyone()
    return scores


def log_validation_image(acc, path: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    image = np.asarray(Image.open(path))[None]  # N, H, W, C
    for tracker in acc.trackers:
        # tensorboard's add_images reads N, C, H, W unless told; wandb takes the HWC images as they are
        extra = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
        tracker.log_images({"validation": image}, step=step, **extra)


def mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def write_summary(out: Path, cfg: TrainConfig, scores: dict) -> None:
    by_step = {}
    for line in (out / "history.jsonl").read_text().splitlines():  # a resumed run repeats some steps
        record = json.loads(line)
        by_step[record["step"]] = record
    history = [by_step[k] for k in sorted(by_step) if "step_time" in by_step[k]]
    first, last = (history[0], history[-1]) if history else ({}, {})
    summary = {
        "model": cfg.model, "steps": cfg.steps, "init": cfg.lora.init,
        "init_relative_error_mean": mean(read_json(out / "init_errors.json").values()),
        "distill_loss_fixed": {k: v["distill_loss_fixed"] for k, v in sorted(by_step.items()) if "distill_loss_fixed" in v},
        "first": first, "last": last, "validation_start": read_json(out / "validation" / "step-0000000.json"),
        "validation": scores,
        "median_step_time": statistics.median(h["step_time"] for h in history) if history else None,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
