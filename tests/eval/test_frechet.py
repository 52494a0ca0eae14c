import numpy as np
import pytest
import scipy.linalg
import torch

from svdtune.errors import UserError
from svdtune.eval.frechet import frechet_distance


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g)
    b = torch.randn(20000, 4, generator=g)
    assert frechet_distance(a, a) < 1e-6
    assert frechet_distance(a, b) < 0.01  # same distribution, sampling noise only
    # N(0, I) vs N(m, 4I) in d = 4: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + 4
    shifted = 2 * b + torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert abs(frechet_distance(a, shifted) - 5.0) < 0.15


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook computation (pytorch-fid's): scipy.linalg.sqrtm of the covariance product."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * covmean))


def test_frechet_distance_equals_scipy_on_random_features():
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(32, 32, generator=g)  # correlated features, unequal spreads
    a = torch.randn(600, 32, generator=g) @ mix
    b = torch.randn(500, 32, generator=g) @ (mix + 0.3 * torch.randn(32, 32, generator=g)) + 0.5
    expected = _scipy_frechet(a.double().numpy(), b.double().numpy())
    assert abs(frechet_distance(a, b) - expected) <= 1e-6 * abs(expected)


def test_frechet_distance_equals_scipy_on_evaluator_features(reference_evaluator):
    from svdtune.eval.prompt_sets import domain_scenes
    from svdtune.eval.world_bench import evaluator_features, render_scenes

    plain, neon = (evaluator_features(reference_evaluator, render_scenes(domain_scenes(style, 300)))
                   for style in ("plain", "neon"))
    for a, b in ((plain, neon), (plain[:150], plain[150:])):  # far apart, and two draws of one style
        expected = _scipy_frechet(a.double().numpy(), b.double().numpy())
        assert expected > 0 and abs(frechet_distance(a, b) - expected) <= 1e-6 * expected


def test_frechet_distance_refuses_a_single_image():
    with pytest.raises(UserError, match="at least 2 images per set, got 1 and 5"):
        frechet_distance(torch.randn(1, 4), torch.randn(5, 4))
