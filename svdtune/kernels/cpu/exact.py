"""The exact CPU path: the same per-group W4A4 numbers as the reference, in fp32.

Each product of a 4-bit code and a 16-bit scale is exact in fp32, so a layer whose residual is
dequantized once (at preparation) and whose activations are fake-quantized per group computes
the reference's result up to fp32 summation order. It is as fast as an fp32 layer, not faster:
an integer per-group GEMM would need one int8 GEMM per 64-wide group, which is slower still on
this CPU (../shared/FACTS.md). Convolutions run here in both CPU modes.
"""

from __future__ import annotations

import torch

from svdtune.quant.svdquant import fake_act

# Compiled: in eager mode the per-group quantization of a large activation costs as much as the GEMM.
# Inductor skips the bf16 round trip of the scales unless told to emulate it (then it is exact).
_compiled_fake_act = torch.compile(fake_act, dynamic=True, options={"emulate_precision_casts": True})


@torch.no_grad()
def prepare(layer) -> torch.Tensor:
    return layer.residual_weight(torch.float32)


def forward(layer, residual: torch.Tensor, x: torch.Tensor, act_clip: torch.Tensor | None = None) -> torch.Tensor:
    return layer.fake_forward(x, residual=residual, act=_compiled_fake_act, clip=act_clip)
