"""Int8 weight-only linear layers for token-by-token decoding on the CPU (the prompt rewriter).

Decoding one sequence reads every weight once per generated token, so its time goes to memory
traffic rather than arithmetic. Int8 weights with one scale per output channel halve the traffic
of bf16, and ATen's `torch._weight_int8pack_mm` multiplies the activations (bf16 or fp32) by them
without a dequantized copy:

    y = (x int8(W)^T) * s_w + b

That kernel only wins on a few rows: on a 576 x 1536 layer here it takes 30 us against bf16's 68 us
for one row, the same for 8, and twice bf16's time from 32 rows on. So calls with more rows
(prefill, batches) keep using the 16-bit weight, which stays: this is a speed path, not a memory
saving. torchao's `Int8WeightOnlyConfig` swaps all calls to int8 and measured slower on this
machine (0.94-1.07 s against 0.85-0.93 s per compiled 40-token rewrite), hence this small module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from svdtune.kernels.cpu.w8a8 import int8_rows


INT8_MAX_ROWS = 8  # calls with more rows than this use the 16-bit weight


class Int8DecodeLinear(nn.Linear):
    """An `nn.Linear` (same weight, bias and state dict) that runs calls of few rows on an int8 copy."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        codes, scale = int8_rows(linear.weight.detach().float())
        self.register_buffer("int8_weight", codes.contiguous(), persistent=False)
        self.register_buffer("int8_scale", scale.to(linear.weight.dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if rows.shape[0] > INT8_MAX_ROWS:
            # As 2-D rows: a strided 3-D input (generate's last-token slice of a batch) sends ATen's
            # matmul to a bmm that copies the weight once per sequence (32 x 576 x 49152 for the head)
            return F.linear(rows, self.weight, self.bias).reshape(*x.shape[:-1], -1)
        y = torch._weight_int8pack_mm(rows, self.int8_weight, self.int8_scale).reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


@torch.no_grad()
def int8_weights_(model: nn.Module) -> int:
    """Give every `nn.Linear` of `model` (in place, on the CPU) an int8 copy for decoding; returns
    how many. A tied output head keeps sharing its weight with the embedding."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Linear:  # exactly: wrappers deriving from Linear keep their own forward
                if child.weight.device.type != "cpu":
                    raise ValueError(f"int8 weights are a CPU path; {name} is on {child.weight.device}")
                setattr(parent, name, Int8DecodeLinear(child))
                swapped += 1
    return swapped
