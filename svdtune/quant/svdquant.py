"""Fit one layer: smoothing search, LoftQ-style low-rank branch, 4-bit residual (SVDQuant, ICLR 2025).

Everything works on the layer's matrix view: W is (N, K) with K ordered (kernel position, channel),
so a k x k convolution is the GEMM of its implicit im2col and a linear layer is the case k = 1.
Smoothing is per activation channel (C = K / positions); `x` is a sample of the layer's input rows.

    x' = x / lambda,   W' = W * lambda,   lambda = max|x|^a / max|W|^(1-a)   (a searched)
    L  = SVD_r(W' - Q(W' - L))  (a few alternations, best output error kept)
    y  = Q(x') Q(W' - L)^T + x' L^T
"""

from __future__ import annotations

import dataclasses

import torch

from svdtune.quant import formats as F
from svdtune.quant.config import QuantConfig
from svdtune.quant.gptq import gptq_quantize

# Shifts for inputs bounded below by an activation's minimum, each exact in fp16 and >= -min:
GELU_SHIFT = 0.171875         # GELU: min -0.16997 (nunchaku uses the same constant)
SILU_SHIFT = 0.278564453125   # SiLU: min -0.27846 (the UNet's resnet convolutions read SiLU outputs)


@dataclasses.dataclass
class LayerQuant:
    smooth: torch.Tensor | None   # (C,) activations are divided by it
    residual: F.QTensor           # Q(W' - L), (N, K)
    down: torch.Tensor | None     # (r, K): x' -> rank r
    up: torch.Tensor | None       # (N, r)
    act_format: str               # "int4", "uint4", "nvfp4", "int8" or "none"
    group_size: int               # effective group along channels (per channel: all of them)
    act_shift: float              # uint4 inputs: quantize (x + shift) / lambda >= 0
    output_error: float           # ||y - y_q||^2 / ||y||^2 on the calibration sample


def act_format(cfg: QuantConfig, input_min: float) -> tuple[str, float]:
    """Inputs that never go below GELU's (or SiLU's) minimum are quantized unsigned after the
    smallest shift that covers them: 16 levels on the non-negative side instead of 8."""
    if cfg.activations == "int4" and cfg.unsigned_acts:
        for shift in (GELU_SHIFT, SILU_SHIFT):
            if input_min >= -shift:
                return "uint4", shift
    return cfg.activations, 0.0


def fake_act(xs: torch.Tensor, fmt: str, group_size: int, shift: torch.Tensor | float = 0.0,
             clip: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize smoothed activations (rows along the last dim); `shift` per channel,
    `clip` per channel group (see formats.fake_quantize)."""
    if fmt == "none":
        return xs
    return F.fake_quantize(xs + shift, fmt, group_size, clip) - shift


def low_rank(m: torch.Tensor, rank: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-r factors (down (r, K), up (N, r)), singular values split evenly between them.

    Randomised SVD (seeded, 16 extra directions, 4 power iterations) unless r is close to full:
    as accurate here and 3-10x faster than LAPACK's SVD, which also degrades badly on busy cores.
    """
    if rank + 16 >= min(m.shape):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            u, s, v = torch.svd_lowrank(m, q=min(rank + 16, min(m.shape)), niter=4)
        u, s, vh = u[:, :rank], s[:rank], v[:, :rank].T
    root = s.sqrt()
    return root[:, None] * vh, u * root


def fit_layer(w: torch.Tensor, x: torch.Tensor, absmax: torch.Tensor, input_min: float,
              cfg: QuantConfig, gram: torch.Tensor | None = None) -> LayerQuant:
    """Quantize the weight `w` (N, K) for inputs like the rows of `x` (T, K).

    `absmax` (C,) is the calibration's per-channel max |input| over the whole trajectory (x is
    only a sample), `gram` (K, K) the mean x^T x over it, GPTQ's Hessian (from `x` if None);
    `cfg` must be resolved.
    """
    w = w.float()
    x, absmax = x.to(w.device, torch.float32), absmax.to(w.device)
    channels = absmax.numel()
    positions = w.shape[1] // channels
    fmt, shift = act_format(cfg, input_min)
    g = cfg.group_size or channels  # a group never straddles two kernel positions
    y_ref = x @ w.T
    ref_energy = y_ref.pow(2).sum().clamp_min(1e-30)

    def error(lam, down, up, residual_dq) -> float:
        lam_k = lam.repeat(positions) if lam is not None else torch.ones(w.shape[1], device=w.device)
        xs = x / lam_k
        y = fake_act(xs, fmt, g, shift / lam_k) @ residual_dq.T
        if down is not None:
            y = y + (xs @ down.T) @ up.T
        return ((y - y_ref).pow(2).sum() / ref_energy).item()

    def candidate(lam, shrink=(1.0,), iters=1, gptq=False):
        lam_k = lam.repeat(positions) if lam is not None else None
        w_s = w * lam_k if lam is not None else w
        importance = (x / lam_k if lam is not None else x).pow(2).mean(0)
        down = up = None
        if cfg.rank:
            down, up = low_rank(w_s, min(cfg.rank, *w.shape))
        if gptq:  # the Hessian of the smoothed input
            h = gram.to(w.device, torch.float32) if gram is not None else x.T @ x / len(x)  # (x: a sample)
            h = h / (lam_k[:, None] * lam_k[None, :]) if lam is not None else h
        best = None
        for i in range(iters):
            target = w_s - up @ down if down is not None else w_s
            if gptq:
                residual = gptq_quantize(target, h, cfg.weights, g, shrink)
            else:
                residual = F.quantize_weight(target, cfg.weights, g, shrink, importance)
            dq = F.dequantize(residual)
            err = error(lam, down, up, dq)
            if best is not None and err >= best[0]:
                break
            best = (err, lam, residual, down, up)
            if down is None or i == iters - 1:  # no refit whose result nobody reads
                break
            down, up = low_rank(w_s - dq, down.shape[0])
        return best

    lambdas = [None]
    if cfg.smooth:
        w_span = w.abs().reshape(w.shape[0], positions, channels).amax((0, 1)).clamp_min(1e-5)
        x_span = absmax.float().clamp_min(1e-5)
        lambdas += [(x_span ** a / w_span ** (1 - a)).clamp(1e-4, 1e4) for a in cfg.smooth_alphas]
    # Search the smoothing strength with the branch in place (one SVD, round-to-nearest), then
    # fit the chosen one fully: shrink search, GPTQ if asked, and low-rank alternations.
    lam = min((candidate(lam) for lam in lambdas), key=lambda c: c[0])[1]
    gptq = cfg.gptq and cfg.weights in F.INT_QMAX
    err, lam, residual, down, up = candidate(lam, cfg.shrink_grid, cfg.lowrank_iters, gptq)
    return LayerQuant(lam, residual, down, up, fmt, g, shift, err)
