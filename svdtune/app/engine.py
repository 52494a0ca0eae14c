"""The demo's logic, free of any UI: which variants are offered, checking a request, generating, and
what is reported for a run (time, memory, model size). `svdtune.app.server` only lays it out.

    engine = Engine(DemoConfig(variants=["16-bit=ref-unet"]))
    result = engine.generate(Request(variant="16-bit", prompt="a small blue square on the left"))
    result.image, result.summary
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from svdtune.app import limits as checks
from svdtune.app.config import DemoConfig
from svdtune.app.limits import DemoInputError
from svdtune.app.pipelines import PipelineCache
from svdtune.app.prompts import PromptStyler, Styled
from svdtune.errors import UserError
from svdtune.eval import variants as variants_mod
from svdtune.eval.cost import measure
from svdtune.pipelines import call_kwargs

log = logging.getLogger("svdtune")
HISTORY_COLUMNS = ["variant", "mode", "prompt", "steps", "time s", "peak MiB", "size MiB"]


@dataclass
class Request:
    variant: str
    prompt: str
    mode: str = "text"                 # text | image | sketch
    image: str | Path | None = None    # image / sketch: the uploaded (or drawn) file
    image_name: str | None = None      # the name the user's file had, for messages
    rewrite: bool = False
    domain: str | None = None
    steps: int = 20
    guidance: float = 4.0
    seed: int = 0
    strength: float = 0.7


@dataclass
class Result:
    image: Image.Image
    request: Request
    prompt: str                        # as given to the model (maybe rewritten)
    styled: Styled | None
    seconds: float
    peak_mib: float
    added_mib: float
    memory_kind: str
    sizes: dict
    kind: str
    notes: list[str] = field(default_factory=list)

    @property
    def model_mib(self) -> float:
        return self.sizes["denoiser_mib"] + self.sizes["adapter_mib"]

    @property
    def summary(self) -> str:
        memory = "CUDA max allocated" if self.memory_kind == "cuda_allocated" else "process peak RSS"
        disk = self.sizes.get("disk_mib")
        adapter = self.sizes.get("adapter_disk_mib")
        on_disk = (f"; on disk {disk:.1f} MiB" + (f" + adapter {adapter:.2f} MiB" if adapter else "")) if disk else ""
        r = self.request  # image and sketch modes run the last `strength` of the schedule, as diffusers does
        steps = f"{r.steps}" if r.mode == "text" else f"{min(int(r.steps * r.strength), r.steps)} of {r.steps}"
        return (f"inference time {self.seconds:.2f} s ({steps} steps, {r.mode})\n"
                f"peak memory {self.peak_mib:.0f} MiB ({memory}; +{self.added_mib:.0f} MiB during this run)\n"
                f"model size {self.model_mib:.2f} MiB ({self.kind}: denoiser as stored for inference"
                f"{', adapter in 16 bits' if self.sizes['adapter_mib'] else ''}{on_disk})"
                + (f"\nprompt rewrite {self.styled.seconds:.2f} s (before the inference, not counted in it)"
                   if self.styled else ""))

    def history_row(self) -> list:
        r = self.request
        prompt = r.prompt if len(r.prompt) <= 60 else r.prompt[:57] + "..."
        mode = r.mode + (" + rewrite" if r.rewrite else "")
        return [r.variant, mode, prompt, r.steps, round(self.seconds, 2), round(self.peak_mib), round(self.model_mib, 2)]


class Engine:
    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.variants: dict[str, variants_mod.Variant] = {}
        self.notes: list[str] = []  # why each variant that was left out cannot load
        for item in cfg.variants:
            try:
                v = variants_mod.parse(item)
            except UserError as e:
                self.notes.append(str(e))
                continue
            if v.label in self.variants:
                raise UserError(f"variants: the label {v.label!r} is used twice")
            self.variants[v.label] = v
        if not self.variants:
            raise UserError("no model variant can be loaded: " + "; ".join(self.notes))
        for note in self.notes:
            log.warning("demo: left out: %s", note)
        self.cache = PipelineCache(cfg.cache_size, cfg.dtype, cfg.device, cfg.backend)
        self.styler = PromptStyler(cfg.rewriter, cfg.rewriter_dtype, cfg.device, cfg.rewriter_compile)

    # ------------------------------------------------------------ checks

    def check(self, r: Request) -> Request:
        """The request with every value checked and normalised; DemoInputError names the first bad one."""
        lim = self.cfg.limits
        if r.variant not in self.variants:
            raise DemoInputError(f"unknown model variant {r.variant!r}; choose one of {', '.join(self.variants)}")
        if r.mode not in checks.MODES:
            raise DemoInputError(f"unknown mode {r.mode!r}; expected one of {', '.join(checks.MODES)}")
        if r.rewrite and r.domain not in self.cfg.domains:
            raise DemoInputError(f"unknown domain {r.domain!r} for rewriting; choose one of {', '.join(self.cfg.domains)}")
        steps = checks.check_steps(r.steps, lim)
        return Request(r.variant, checks.check_prompt(r.prompt, lim), r.mode, r.image, r.image_name, bool(r.rewrite),
                       r.domain, steps, checks.check_guidance(r.guidance, lim), checks.check_seed(r.seed),
                       checks.check_strength(r.strength, steps) if r.mode != "text" else r.strength)

    def input_image(self, r: Request) -> Image.Image | None:
        """The checked input image of an image / sketch request (None for text)."""
        if r.mode == "text":
            return None
        what = "the sketch" if r.mode == "sketch" else "the uploaded image"
        image = checks.open_upload(r.image, self.cfg.limits, what, r.image_name)
        if r.mode == "sketch" and checks.is_blank(image):
            raise DemoInputError("the sketch is empty: draw something first")
        return image

    # ------------------------------------------------------------ generation

    def generate(self, request: Request) -> Result:
        r = self.check(request)
        init = self.input_image(r)  # refused before a model is loaded for it
        loaded_before = r.variant in self.cache
        notes = [] if loaded_before else [f"loaded {r.variant} ({self.variants[r.variant].spec}); a first run "
                                          "includes warm-up (4-bit kernels compile on first use)"]
        item = self.cache.get(self.variants[r.variant])
        if init is not None:  # centre square at the model's size
            init = ImageOps.fit(init, (item.resolution, item.resolution), Image.Resampling.LANCZOS)
        styled = self.styler.apply(r.prompt, r.domain) if r.rewrite else None
        prompt = styled.text if styled else r.prompt
        pipe = item.img2img() if init is not None else item.pipe
        extra = dict(image=init, strength=r.strength) if init is not None else {}
        device = self.cfg.device
        with item.lock, torch.no_grad(), measure(device) as cost:
            out = pipe(prompt=prompt, num_inference_steps=r.steps, guidance_scale=r.guidance,
                       generator=torch.Generator("cpu").manual_seed(r.seed), output_type="np",
                       **extra, **call_kwargs(pipe))
        image = Image.fromarray((np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8))
        return Result(image, r, prompt, styled, cost.seconds, cost.peak_mib, cost.added_mib, cost.memory_kind,
                      item.sizes, item.variant.kind, notes + ([styled.note] if styled else []))
