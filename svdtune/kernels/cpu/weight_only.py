"""cpu-fast for weight-only layers (4-bit weights, 16-bit activations: `QuantConfig.weight_only`).

As in `w8a8`, the per-group 4-bit residual becomes int8 with one scale per output channel once, at
preparation; the activations stay as they are and ATen's `torch._weight_int8pack_mm` multiplies
them by the int8 weight without a dequantized copy. Such layers (AdaLN modulation) see one row per
image, where reading the weight is the whole cost: 1 byte per weight instead of 4 for fp32.

    y = ((x / lambda) int8(R)^T) * s_w + (x down^T) up^T + b
"""

from __future__ import annotations

import dataclasses

import torch

from svdtune.kernels.cpu.w8a8 import int8_rows


@dataclasses.dataclass
class WeightOnlyPlan:
    weight: torch.Tensor        # (N, K) int8
    weight_scale: torch.Tensor  # (N,) fp32
    inv_smooth: torch.Tensor    # (K,) fp32


@torch.no_grad()
def prepare(layer) -> WeightOnlyPlan:
    weight, scale = int8_rows(layer.residual_weight(torch.float32))
    return WeightOnlyPlan(weight.contiguous(), scale, 1 / layer.smooth.float())


def forward(layer, plan: WeightOnlyPlan, x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(-1, x.shape[-1]).float() * plan.inv_smooth
    y = torch._weight_int8pack_mm(rows, plan.weight, plan.weight_scale).reshape(*x.shape[:-1], -1).to(x.dtype)
    if layer.bias is not None:
        y = y + layer.bias
    return y + layer.branch(x)
