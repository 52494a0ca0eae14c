import torch

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
