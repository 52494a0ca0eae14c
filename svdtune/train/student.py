"""The student: the teacher's denoiser quantized to SVDQuant W4A4, with a LoRA adapter initialised.

The quantized backbone is made once (or read from `cfg.quantized`) and the student's initial state
(adapter and any re-quantized codes) is saved beside the run, so a resumed or multi-process run
starts from exactly the same model without quantizing again.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from svdtune.config import atomic_save_file, atomic_write_text
from svdtune.errors import UserError
from svdtune.pipelines import with_denoiser
from svdtune.quant.quantize import denoiser_of, quantize
from svdtune.quant.serialize import MANIFEST, load_quantized, load_state, save_quantized
from svdtune.train.config import TrainConfig
from svdtune.train.init import init_adapter
from svdtune.train.lora import attach, lora_config, lora_layers

log = logging.getLogger("svdtune")


def quantized_backbone(cfg: TrainConfig, teacher, out: Path, is_main: bool, wait,
                       prompts: list[str] | None = None) -> nn.Module:
    """A fresh W4A4 copy of the teacher's denoiser: loaded from `cfg.quantized` or `out/backbone`,
    quantized there first (by the main process, the others wait) when neither exists, calibrated
    on `prompts` unless the quant config names a prompt file."""
    folder = Path(cfg.quantized) if cfg.quantized else out / "backbone"
    if not cfg.quantized and not (folder / MANIFEST).is_file() and is_main:
        model = copy.deepcopy(denoiser_of(teacher))
        with with_denoiser(teacher, model):
            quantize(teacher, cfg.quant, prompts=None if cfg.quant.calibration.prompt_file else prompts)
        save_quantized(model, folder, source=cfg.model)
        log.info("quantized the backbone (%s) to %s", cfg.quant.method, folder)
    wait()
    return load_quantized(folder, copy.deepcopy(denoiser_of(teacher)))


def build_student(cfg: TrainConfig, teacher, out: Path, is_main: bool, wait,
                  prompts: list[str] | None = None) -> nn.Module:
    """The student with the adapter attached and initialised (per-layer relative weight errors
    after the init go to init_errors.json)."""
    student = quantized_backbone(cfg, teacher, out, is_main, wait, prompts)
    lora = cfg.lora
    torch.manual_seed(cfg.seed)  # peft's random A: what zero init does not redraw (16-bit targets, spare rows)
    attach(student, lora_config(student, lora.rank, lora.alpha, lora.dropout, lora.target, lora.target_16bit),
           cfg.adapter_name)
    initial = out / "student-init.safetensors"
    if not initial.is_file() and is_main:
        torch.manual_seed(cfg.seed)  # zero init's random A
        errors = init_adapter(student, denoiser_of(teacher), cfg.adapter_name, cfg.lora.init, cfg.lora.init_iters)
        if lora.act_clip:
            for layer in lora_layers(student).values():
                layer.lora_act_clip[cfg.adapter_name].data.fill_(lora.act_clip_init)
        atomic_write_text(out / "init_errors.json", json.dumps(errors, indent=1))
        atomic_save_file(student.state_dict(), initial)
    wait()
    try:
        load_state(student, load_file(initial), initial)
    except UserError as e:  # missing, unexpected or resized tensors: made for another lora / quant config
        first = str(e).removeprefix(f"{initial}: ")
        raise UserError(f"{initial} does not fit this run's adapter (lora.rank, lora.target or the backbone changed "
                        f"since it was made; {first}): delete it to re-initialise, or run in a new output_dir") from None
    return student


def optimizer_groups(student: nn.Module, params: list[nn.Parameter], cfg: TrainConfig) -> list[dict]:
    """The adapter's weights at optim.lr; its activation clips at lora.act_clip_lr, never decayed
    (weight decay would pull them towards a zero range)."""
    clips = {id(p) for name, p in student.named_parameters() if "lora_act_clip" in name}
    groups = [{"params": [p for p in params if id(p) not in clips]},
              {"params": [p for p in params if id(p) in clips], "lr": cfg.lora.act_clip_lr or cfg.optim.lr,
               "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def load_trained(run_dir: str | Path, adapter_name: str | None = None) -> tuple[nn.Module, TrainConfig]:
    """The trained student of a finished `svdtune train` run: its quantized backbone (with any
    codes the init re-quantized) and its final adapter, attached as `adapter_name` (default: the
    run's own name)."""
    from svdtune.config import load_config
    from svdtune.train.lora import load_adapter

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise UserError(f"{str(run)!r} is not a training run (no config.yaml in it)")
    cfg = load_config(TrainConfig, run / "config.yaml")
    if not (run / "adapter").is_dir():
        raise UserError(f"{run}: the run has not finished (no adapter/ in it); resume it with `svdtune train`")
    model = load_quantized(Path(cfg.quantized) if cfg.quantized else run / "backbone")
    load_adapter(model, run / "adapter", adapter_name or cfg.adapter_name)
    initial = run / "student-init.safetensors"
    if initial.is_file():  # loftq-requant re-quantized the residual: those codes belong to the adapter
        codes = {k: v for k, v in load_file(initial).items() if "lora_" not in k}
        model.load_state_dict(codes, strict=False)
    return model.eval(), cfg
