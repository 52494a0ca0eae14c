"""The GEMM view of a convolution, shared by calibration and the kernels: im2col rows whose K axis
is ordered (kernel position, input channel), the order the quantized weights are stored in."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn


def im2col_rows(x: torch.Tensor, conv) -> torch.Tensor:
    """(B, C, H, W) -> (B * L, positions * C) for `conv` (anything with kernel_size, dilation,
    padding and stride: an nn.Conv2d or a LayerSpec)."""
    b, c = x.shape[:2]
    positions = math.prod(conv.kernel_size)
    cols = Fn.unfold(x, conv.kernel_size, conv.dilation, conv.padding, conv.stride)
    return cols.reshape(b, c, positions, -1).permute(0, 3, 2, 1).reshape(-1, positions * c)


def conv_output_size(hw, conv) -> tuple[int, int]:
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(hw, conv.kernel_size, conv.stride, conv.padding, conv.dilation))
