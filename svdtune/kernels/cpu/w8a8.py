"""The fast CPU path: the 4-bit residual runs through one int8 VNNI GEMM (`torch._int_mm`, oneDNN).

This CPU has no 4-bit arithmetic; int8 GEMMs run at about 4.5x fp32 and 2x bf16, while a loop of
one int8 GEMM per 64-wide group is slower than fp32 (../shared/FACTS.md). So the per-group 4-bit
residual is re-expressed once, at preparation, as int8 with one scale per output channel (every
4-bit value times its group scale, rounded to 1/127 of the row's largest: about 7 bits, much finer
than the 4 bits it came from), and activations are quantized per token to int8:

    y = (int8(x / lambda) int8(R)^T) * s_x * s_w + (x down^T) up^T + b

What it computes differs from the exact W4A4 layer only in that activations keep 8 bits instead
of 4 (closer to the 16-bit model, not further); `benchmarks/kernels_cpu.py` reports both errors.
Activation quantization, GEMM and epilogue are one `torch.compile`d function: in eager mode the
quantization alone costs as much as the GEMM once x leaves the cache.
"""

from __future__ import annotations

import dataclasses

import torch

from svdtune.quant import formats as F


@dataclasses.dataclass
class W8A8Plan:
    weight: torch.Tensor        # (N, K) int8
    weight_scale: torch.Tensor  # (N,) fp32
    inv_smooth: torch.Tensor    # (K,) fp32
    down: torch.Tensor          # (K, r) bf16: the branch is 16-bit, as in SVDQuant's own kernels
    up: torch.Tensor            # (r, N) bf16
    bias: torch.Tensor          # (N,) fp32 (zeros without a bias)


def int8_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row: (N, K) fp32 -> int8 codes, (N,) scales."""
    scale = (w.abs().amax(dim=1) / 127).clamp_min(F.TINY)
    return (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8), scale


@torch.no_grad()
def prepare(layer) -> W8A8Plan:
    inv_smooth = 1 / layer.smooth.float()
    weight, scale = int8_rows(layer.residual_weight(torch.float32))
    n = layer.spec.out_channels
    return W8A8Plan(
        weight=weight, weight_scale=scale, inv_smooth=inv_smooth,
        down=layer.down.T.to(torch.bfloat16).contiguous(), up=layer.up.T.to(torch.bfloat16).contiguous(),
        # detached: a Parameter argument would make torch.compile specialise on every layer's shape
        bias=layer.bias.detach().float() if layer.bias is not None else torch.zeros(n, device=weight.device),
    )


def _w8a8(x, weight, weight_scale, inv_smooth, down, up, bias):
    xs = x * inv_smooth
    sx = (xs.abs().amax(dim=1, keepdim=True) / 127).clamp_min(F.TINY)
    acc = torch._int_mm((xs / sx).round().to(torch.int8), weight.T)
    # The branch in bf16: its two skinny GEMMs cost about a tenth of the layer in fp32 (K=N=1024:
    # 2.82x fp32 for the layer instead of 2.46x, output SQNR 30.71 dB instead of 30.77)
    branch = (x.to(torch.bfloat16) @ down) @ up
    return acc.float() * sx * weight_scale + bias + branch


_compiled = torch.compile(_w8a8, dynamic=True)


def forward(plan: W8A8Plan, x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).float()
    y = _compiled(rows, plan.weight, plan.weight_scale, plan.inv_smooth, plan.down, plan.up, plan.bias)
    return y.reshape(*x.shape[:-1], -1).to(x.dtype)
