"""GPTQ (Frantar et al., 2023) for a weight with group-wise integer scales: columns are rounded in
order and each one's rounding error is spread over the columns not yet rounded, weighted by the
inverse Hessian of the layer's output error, H = X^T X over calibration inputs X (T, K).

deepcompressor runs it on SVDQuant's 4-bit residual; here `fit_layer` does too (`QuantConfig.gptq`).
Each group's scales are chosen (with the range-shrink search) when the sweep reaches the group,
from the weights as the earlier columns' errors have updated them.
"""

from __future__ import annotations

import torch

from svdtune.quant import formats as F


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, fmt: str, group_size: int, shrink_grid=(1.0,),
                  damp: float = 0.01) -> F.QTensor:
    """Quantize `w` (N, K) for inputs X with Hessian `h` = X^T X / T (K, K); `fmt` an integer format."""
    if fmt not in F.INT_QMAX:
        raise ValueError(f"GPTQ here rounds to integer codes; {fmt!r} is not one of {', '.join(F.INT_QMAX)}")
    w = w.float().clone()
    n, k = w.shape
    group = F.group_of(k, group_size)
    h = h.float().clone()
    dead = h.diagonal() == 0  # channels never seen: nothing to preserve
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h += damp * h.diagonal().mean() * torch.eye(k, device=h.device)
    # The upper Cholesky factor of H^-1 gives each step's row of the inverse of what is left.
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    importance = h.diagonal()
    lo, hi = F.INT_RANGE[fmt]
    codes = torch.empty(n, k, dtype=torch.int8, device=w.device)
    scales = []
    for start in range(0, k, group):
        stop = start + group
        block, block_inv = w[:, start:stop].clone(), h_inv[start:stop, start:stop]
        scale = F.quantize_weight(block, fmt, 0, shrink_grid, importance[start:stop]).scales.reshape(n, 1)
        errors = torch.empty_like(block)
        for j in range(group):
            column = block[:, j]
            code = (column / scale[:, 0].float()).round().clamp(lo, hi)
            codes[:, start + j] = code.to(torch.int8)
            errors[:, j] = (column - code * scale[:, 0].float()) / block_inv[j, j]
            block[:, j:] -= errors[:, j:j + 1] * block_inv[j, j:]
        w[:, stop:] -= errors @ h_inv[start:stop, stop:]
        scales.append(scale)
    return F.QTensor(codes, torch.cat(scales, 1), fmt, group)
