"""The pure-torch reference for W4A4 layers: the ground truth every fast kernel is tested against.

It computes what an integer kernel computes: activations are quantized per token (per pixel for
convolutions) in channel groups, each group's integer dot products are summed exactly, then scaled
by the activation and weight group scales:

    y[m, n] = sum_g sa[m, g] sw[n, g] sum_{k in g} qa[m, k] qw[n, k]  -  shift correction
              + (x down^T) up^T + b
"""

from __future__ import annotations

import torch
import torch.nn.functional as Fn

from svdtune.quant import formats as F
from svdtune.quant.im2col import conv_output_size, im2col_rows


def grouped_gemm(a_values: torch.Tensor, a_scales: torch.Tensor, w: F.QTensor) -> torch.Tensor:
    """(M, K) code values with (M, groups) scales times the quantized weight (N, K) -> (M, N).

    Partial sums over one group are sums of small integer (or E2M1) products: exact in float64.
    """
    wv, ws, g = F.code_values(w).double(), F.group_scales(w).double(), w.group_size
    av, as_ = a_values.double(), a_scales.double()
    out = torch.zeros(av.shape[0], wv.shape[0], dtype=torch.float64, device=av.device)
    for j in range(wv.shape[1] // g):
        part = av[:, j * g:(j + 1) * g] @ wv[:, j * g:(j + 1) * g].T
        out += part * as_[:, j:j + 1] * ws[:, j]
    return out


def svdquant_forward(layer, x: torch.Tensor, act_clip: torch.Tensor | None = None) -> torch.Tensor:
    """Forward of an `SVDQuantLinear` through integer codes (see the module docstring); `act_clip`
    scales each activation group's range."""
    s = layer.spec
    conv = s.kernel_size is not None
    smooth = layer.smooth.float()
    xs = x.float() / (smooth.view(1, -1, 1, 1) if conv else smooth)
    w = layer.residual()
    shift = layer._shift()
    shift = shift.float() if torch.is_tensor(shift) else torch.full_like(smooth, shift)

    rows = xs.movedim(1, -1) if conv else xs.reshape(-1, s.in_channels)
    if s.activations == "none":
        values, scales = rows, torch.ones(*rows.shape[:-1], rows.shape[-1] // w.group_size, device=rows.device)
    else:
        clip = 1.0 if act_clip is None else act_clip.float().unsqueeze(-1)
        qa = F.quantize(rows + shift, s.activations, s.group_size, clip)
        values, scales = F.code_values(qa), F.group_scales(qa)
    if conv:  # im2col of the codes and of their scales (padding: code 0, contributes nothing)
        # channels-last codes and scales -> im2col rows, K ordered (position, channel group)
        values, scales = im2col_rows(values.movedim(-1, 1), s), im2col_rows(scales.movedim(-1, 1), s)
    y = grouped_gemm(values, scales, w)

    w_dq = F.dequantize(w).double()
    if conv:
        out_hw = conv_output_size(x.shape[-2:], s)
        y = y.reshape(x.shape[0], *out_hw, -1).movedim(-1, 1)
        if s.act_shift:  # the shift's contribution, with zero padding at the borders as in conv2d
            ones = shift.double().view(1, -1, 1, 1).expand(1, -1, *x.shape[-2:])
            y = y - Fn.conv2d(ones, layer.as_conv_weight(w_dq), None, s.stride, s.padding, s.dilation)
    else:
        y = y.reshape(*x.shape[:-1], -1)
        if s.act_shift:
            y = y - shift.double() @ w_dq.T
    y = y.to(x.dtype) + layer.branch(x)
    if layer.bias is not None:
        y = y + (layer.bias.view(-1, 1, 1) if conv else layer.bias)
    return y

