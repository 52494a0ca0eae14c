"""What every svdtune training recipe shares (domain adapters, the prompt rewriter).

- `make_accelerator`: accelerate set-up from the run config (mixed precision, trackers with wandb
  offline by default, DDP / DeepSpeed, CPU or GPU);
- `own_rows`: which rows of an optimizer step's global batch this process takes, so that 1 and N
  processes, and resumed runs, see the same samples;
- adapter-only checkpoints through accelerate (optimizer, schedule, RNG states, EMA), written under
  a temporary name and renamed, and `resume` that skips an unreadable newest checkpoint.

A run config provides: mixed_precision, log_with, deepspeed, grad_accum, device, resume.
"""

from __future__ import annotations

import json
import logging
import os
import resource
from datetime import timedelta
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from svdtune.config import atomic_write_text, swap_in
from svdtune.errors import UserError
from svdtune.train.checkpoint import checkpoint_name, list_checkpoints, prune_checkpoints
from svdtune.train.lora import adapter_state

log = logging.getLogger("svdtune")


def make_accelerator(cfg, out: Path):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # accelerate keeps its settings process-wide; a second run in one process (quickstart,
    # benchmarks, a notebook) may ask for other ones (transformers' Trainer resets them too).
    AcceleratorState._reset_state()
    GradientState._reset_state()

    os.environ.setdefault("WANDB_MODE", "offline")
    log_with = None if cfg.log_with == "none" else cfg.log_with
    if log_with == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise UserError("log_with=tensorboard needs the tensorboard package (pip install tensorboard)") from None
    handlers = [
        # The frozen 4-bit storage is identical on every process: no buffer broadcast each forward.
        # Adapters whose output a model discards (SD3's last text stream) get no gradient.
        DistributedDataParallelKwargs(broadcast_buffers=False, find_unused_parameters=True),
        # Rank 0 quantizes, records trajectories and validates while the others wait.
        InitProcessGroupKwargs(timeout=timedelta(hours=3)),
    ]
    deepspeed = None
    if cfg.deepspeed:
        from accelerate.utils import DeepSpeedPlugin

        if not Path(cfg.deepspeed).is_file():
            raise UserError(f"deepspeed config {cfg.deepspeed!r} does not exist")
        deepspeed = DeepSpeedPlugin(hf_ds_config=cfg.deepspeed, gradient_accumulation_steps=cfg.grad_accum)
    # The LR schedule steps once per optimizer step, whatever the process count (accelerate's default
    # steps it once per process), so a run can resume on another number of processes.
    return Accelerator(mixed_precision=cfg.mixed_precision, log_with=log_with, project_dir=str(out),
                       kwargs_handlers=handlers, cpu=cfg.device == "cpu", deepspeed_plugin=deepspeed,
                       step_scheduler_with_optimizer=False)


def tracker_kwargs(cfg, out: Path) -> dict:
    return {"wandb": {"dir": str(out), "name": out.name}} if cfg.log_with == "wandb" else {}


def make_optimizer(params: list[torch.nn.Parameter] | list[dict], cfg) -> torch.optim.Optimizer:
    """AdamW or 8-bit AdamW over parameters or parameter groups (a group's own lr, weight_decay win)."""
    o = cfg.optim
    kwargs = dict(lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def own_rows(micro: int, rank: int, processes: int, batch_size: int) -> slice:
    """Rows of the global batch for (micro-step, process): one process with batch 2B at micro-step
    m takes exactly the rows two processes with batch B take at m."""
    start = (micro * processes + rank) * batch_size
    return slice(start, start + batch_size)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def append_history(out: Path, record: dict) -> None:
    """One line of history.jsonl (appended as the run goes: a resumed run continues the same file).
    Floats keep 6 significant digits: a 4-bit UNet's distillation loss is about 1e-4."""
    with open(out / "history.jsonl", "a") as f:
        f.write(json.dumps({k: float(f"{v:.6g}") if isinstance(v, float) else v for k, v in record.items()}) + "\n")


ADAPTER_FILE, EMA_FILE, STATE_FILE = "adapter.safetensors", "ema.safetensors", "trainer_state.json"


def register_adapter_hooks(acc, adapter_name: str, ema) -> None:
    """accelerate saves optimizer, LR schedule, scaler and every process's RNG; these hooks make it
    store the adapter (and EMA) alone instead of the whole model."""

    def save_hook(models, weights, output_dir):
        if acc.is_main_process:
            state = adapter_state(acc.unwrap_model(models[0]), adapter_name)
            save_file({k: v.detach().contiguous() for k, v in state.items()}, Path(output_dir) / ADAPTER_FILE)
            if ema is not None:
                save_file({str(i): p.contiguous() for i, p in enumerate(ema.shadow_params)}, Path(output_dir) / EMA_FILE)
        weights.clear()

    def load_hook(models, input_dir):
        from peft import set_peft_model_state_dict

        model = acc.unwrap_model(models.pop())
        set_peft_model_state_dict(model, load_file(Path(input_dir) / ADAPTER_FILE), adapter_name=adapter_name)
        if ema is not None:
            shadow = load_file(Path(input_dir) / EMA_FILE)
            for i, p in enumerate(ema.shadow_params):
                p.copy_(shadow[str(i)])

    acc.register_save_state_pre_hook(save_hook)
    acc.register_load_state_pre_hook(load_hook)


def save_checkpoint(acc, out: Path, step: int, keep: int) -> None:
    """Written under a temporary name and renamed: a run killed mid-save keeps its last checkpoint."""
    root = out / "checkpoints"
    final = root / checkpoint_name(step)
    tmp = final.with_name(final.name + ".tmp")
    acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        atomic_write_text(tmp / STATE_FILE, json.dumps({"step": step}))
        swap_in(tmp, final)
        prune_checkpoints(root, keep)
    acc.wait_for_everyone()


def resume(acc, cfg, out: Path) -> int:
    """The step to start from: 0, or the step of the newest readable checkpoint. A corrupt or
    truncated checkpoint is reported and the one before it is used."""
    if not cfg.resume:
        return 0
    candidates = list_checkpoints(out / "checkpoints") if cfg.resume == "latest" else [Path(cfg.resume)]
    if not candidates:
        log.info("resume=latest: no checkpoint in %s, starting from step 0", out / "checkpoints")
        return 0
    for ckpt in reversed(candidates):
        try:
            step = int(json.loads((ckpt / STATE_FILE).read_text())["step"])
            acc.load_state(str(ckpt))
        except Exception as e:  # noqa: BLE001 - any unreadable file means: fall back to an older one
            log.warning("checkpoint %s is unreadable (%s: %s); trying the previous one", ckpt, type(e).__name__, e)
            continue
        log.info("resumed from %s (step %d)", ckpt, step)
        return step
    raise UserError(f"no readable checkpoint among {', '.join(str(c) for c in candidates)}")
