"""Calibration: run the 16-bit pipeline on captions and record what each target layer's input looks like.

Forward pre-hooks on the denoiser's layers see every denoising step and both CFG branches (the
pipelines batch them). Per layer they keep the running per-channel max |x|, the minimum, and a
fixed-size reservoir sample of input rows (im2col rows for convolutions) for the error objective.
Memory is bounded by `sample_tokens` x K per layer (plus a K x K fp32 Gram per layer for GPTQ),
never by the trajectory length.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from svdtune.errors import UserError
from svdtune.pipelines import call_kwargs
from svdtune.quant.config import CalibrationConfig
from svdtune.quant.im2col import conv_output_size, im2col_rows


@dataclasses.dataclass
class LayerStats:
    absmax: torch.Tensor   # (C,) max |x| per input channel over everything seen
    min: float             # smallest input value seen
    sample: torch.Tensor   # (<= sample_tokens, K) input rows, fp16
    seen: int              # rows seen
    gram: torch.Tensor | None = None  # (K, K) sum of x^T x over every row seen (fp32), for GPTQ


def input_rows(module: nn.Module, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's GEMM input rows (M, K): tokens for Linear, im2col patches ordered (position,
    channel) for Conv2d. `index` selects a subset of the rows."""
    if isinstance(module, nn.Conv2d):
        cols = im2col_rows(x, module)
        return cols if index is None else cols[index]
    rows = x.reshape(-1, x.shape[-1])
    return rows if index is None else rows[index]


def row_count(module: nn.Module, x: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        h, w = conv_output_size(x.shape[-2:], module)
        return x.shape[0] * h * w
    return x.numel() // x.shape[-1]


class _Recorder:
    """Forward pre-hook that accumulates one layer's `LayerStats` (reservoir sampling, Algorithm R)."""

    def __init__(self, tokens: int, seed: int, gram: bool = False):
        self.tokens, self.gen = tokens, torch.Generator().manual_seed(seed)
        self.absmax, self.min, self.sample, self.seen = None, float("inf"), None, 0
        self.gram = 0.0 if gram else None

    @torch.no_grad()
    def __call__(self, module, args):
        x = args[0].detach()
        dims = (0, 2, 3) if isinstance(module, nn.Conv2d) else tuple(range(x.dim() - 1))
        amax = x.abs().float().amax(dim=dims)
        self.absmax = amax if self.absmax is None else torch.maximum(self.absmax, amax)
        self.min = min(self.min, x.min().item())
        m = row_count(module, x)
        every = input_rows(module, x) if self.gram is not None else None  # im2col once, for both uses
        if every is not None:
            self.gram = self.gram + (every.float().T @ every.float()).cpu()
        fill = min(self.tokens - (0 if self.sample is None else len(self.sample)), m)
        # Algorithm R: row i (0-based over all rows seen) replaces slot j ~ U[0, i] when j < tokens.
        i = torch.arange(fill, m) + self.seen
        j = (torch.rand(len(i), generator=self.gen, dtype=torch.float64) * (i + 1)).long()
        keep = j < self.tokens
        take = torch.cat([torch.arange(fill), torch.arange(fill, m)[keep]])
        self.seen += m
        if not len(take):
            return
        # fp16 keeps 3 more mantissa bits than bf16 but overflows past 65504, which activation
        # outliers can reach: such a layer (and a bf16 model) keeps its sample in bf16.
        wide = x.dtype == torch.bfloat16 or self.absmax.max() >= torch.finfo(torch.float16).max
        rows = (every[take] if every is not None else input_rows(module, x, take)).to(
            torch.bfloat16 if wide else torch.float16).cpu()
        if self.sample is not None and self.sample.dtype != rows.dtype:
            self.sample = self.sample.to(rows.dtype)  # fp16 -> bf16 loses no range
        new = rows[:fill]
        self.sample = new if self.sample is None else torch.cat([self.sample, new])
        for slot, row in zip(j[keep].tolist(), rows[fill:]):  # in order: later rows win a slot
            self.sample[slot] = row

    def stats(self) -> LayerStats:
        if self.absmax is None:
            raise UserError("a layer to quantize never ran during calibration; check the include/exclude patterns")
        return LayerStats(self.absmax.cpu(), self.min, self.sample, self.seen, self.gram)


def calibration_prompts(cfg: CalibrationConfig, world_model: bool) -> list[str]:
    """`cfg.prompts` captions: from `prompt_file` (one per line) or, for reference models, the world."""
    return caption_prompts(cfg.prompts, cfg.prompt_file, world_model, cfg.seed + 50_000, "calibration.prompt_file")


def caption_prompts(n: int, prompt_file: str, world_model: bool, seed: int, key: str) -> list[str]:
    """`n` captions from `prompt_file` (one per line, cycled) or, for reference models, fresh world
    scenes (plain style; a quarter short captions) drawn from the stream `seed`."""
    if prompt_file:
        path = Path(prompt_file)
        if not path.is_file():
            raise UserError(f"{key} {str(path)!r} does not exist")
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not lines:
            raise UserError(f"{key} {str(path)!r} has no captions (expected one per line)")
        return [lines[i % len(lines)] for i in range(n)]
    if not world_model:
        raise UserError(f"{key} is required for models other than the reference family")
    from svdtune.data import world

    rng = random.Random(seed)
    scenes = [world.sample_scene(world.scene_rng(seed, i), style="plain") for i in range(n)]
    return [s.short_caption() if rng.random() < 0.25 else s.detailed_caption() for s in scenes]


class Recording:
    """Context manager: hooks on `layers` (name -> module) while the model runs, then `stats()`.

        with Recording(layers, sample_tokens=256) as rec:
            model(**inputs)            # any number of forward passes
        stats = rec.stats()
    """

    def __init__(self, layers: dict[str, nn.Module], sample_tokens: int, seed: int = 0, gram: bool = False):
        self.layers = layers
        self.recorders = {name: _Recorder(sample_tokens, seed + i, gram) for i, name in enumerate(layers)}
        self.handles = []

    def __enter__(self) -> "Recording":
        self.handles = [m.register_forward_pre_hook(self.recorders[n]) for n, m in self.layers.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def stats(self) -> dict[str, LayerStats]:
        return {name: r.stats() for name, r in self.recorders.items()}


@torch.no_grad()
def calibrate(pipe, layers: dict[str, nn.Module], prompts: list[str], cfg: CalibrationConfig,
              gram: bool = False) -> dict[str, LayerStats]:
    """Run `pipe` on `prompts` (every step, both CFG branches) while recording `layers` of its
    denoiser; `gram` also sums each layer's x^T x (GPTQ's Hessian)."""
    with Recording(layers, cfg.sample_tokens, cfg.seed, gram) as rec:
        for start in tqdm(range(0, len(prompts), cfg.batch_size), desc="calibrate", unit="batch"):
            chunk = prompts[start:start + cfg.batch_size]
            gens = [torch.Generator("cpu").manual_seed(cfg.seed + start + i) for i in range(len(chunk))]
            pipe(prompt=chunk, num_inference_steps=cfg.steps, guidance_scale=cfg.guidance,
                 generator=gens, output_type="latent", **call_kwargs(pipe))
    return rec.stats()
