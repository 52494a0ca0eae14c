"""Error measures for quantized outputs (torchao's convention: SQNR in dB)."""

from __future__ import annotations

import math

import torch


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """10 log10(||y||^2 / ||y - y_q||^2); +inf when identical."""
    ref, err = reference.double(), (reference.double() - approx.double())
    noise = err.pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(ref.pow(2).sum().item() / noise)


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """||y - y_q|| / ||y||."""
    ref = reference.double()
    return ((ref - approx.double()).norm() / ref.norm().clamp_min(1e-30)).item()
