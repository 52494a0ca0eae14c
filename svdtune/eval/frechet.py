"""Fréchet distance between two sets of feature vectors (FID's formula, any feature extractor)."""

from __future__ import annotations

import torch

from svdtune.errors import UserError


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(m)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2), in float64."""
    if min(len(a), len(b)) < 2:  # a covariance needs two samples; torch.cov would return NaN silently
        raise UserError(f"a Fréchet distance needs at least 2 images per set, got {len(a)} and {len(b)} "
                        "(raise prompts_per_set, or give more prompts)")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrt_psd(s_a)
    cross = _sqrt_psd(root_a @ s_b @ root_a)
    return ((mu_a - mu_b).pow(2).sum() + torch.trace(s_a + s_b - 2 * cross)).item()
