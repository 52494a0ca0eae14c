"""The Triton W4A4 kernels against the pure-torch reference: 24 random shapes (K, N off the tile
sizes, ranks 0 to 40, signed and post-GELU unsigned activations, half with a learned activation
clip). Runs under TRITON_INTERPRET=1 on CPU (tests/conftest.py), natively on a GPU."""

import random

import pytest
import torch
from torch import nn

from svdtune.quant.linear import set_backend
from svdtune.quant.metrics import relative_error, sqnr_db
from tests.quant.test_linear import quantized, with_clip

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def shapes(n=24, seed=0):
    rng = random.Random(seed)
    for i in range(n):
        yield dict(m=rng.randint(1, 70), k=64 * rng.randint(1, 4), n=rng.randint(8, 130), rank=rng.choice([0, 4, 8, 40]),
                   gelu=i % 3 == 2, clip=i % 2 == 1, seed=i)


@pytest.mark.parametrize("case", list(shapes()), ids=lambda c: f"m{c['m']}-k{c['k']}-n{c['n']}-r{c['rank']}"
                         + ("-uint4" if c["gelu"] else "") + ("-clip" if c["clip"] else ""))
def test_triton_matches_reference(case):
    torch.manual_seed(case["seed"])
    module = nn.Linear(case["k"], case["n"])
    x = torch.randn(case["m"], case["k"]) * torch.where(torch.rand(case["k"]) < 0.05, 8.0, 1.0)
    layer, x = quantized(module, x, dict(rank=case["rank"]) if case["rank"] else dict(method="smoothquant"),
                         "gelu" if case["gelu"] else None)
    assert layer.spec.activations == ("uint4" if case["gelu"] else "int4")
    if case["clip"]:
        with_clip(layer, case["seed"])
    with torch.no_grad():
        reference = set_backend(layer, "reference")(x)
        out = set_backend(layer.to(DEVICE), "triton")(x.to(DEVICE)).cpu()
    assert relative_error(reference, out) < 1e-2 and sqnr_db(reference, out) >= 30


@pytest.mark.parametrize("make, x, overrides", [
    (lambda: nn.Conv2d(64, 32, 3, padding=1), torch.randn(1, 64, 6, 6), dict(rank=4)),
    (lambda: nn.Linear(48, 32), torch.randn(5, 48), dict(rank=4, group_size=0)),  # one group of 48: not a power of 2
    (lambda: nn.Linear(64, 32), torch.randn(5, 64), dict(rank=4, group_size=8)),  # below tl.dot's smallest K
], ids=["conv3x3", "group48", "group8"])
def test_unsupported_layers_fall_back_to_the_exact_path(make, x, overrides):
    from svdtune.kernels import triton as triton_kernels

    torch.manual_seed(0)
    layer, x = quantized(make(), x, overrides)
    assert not triton_kernels.supports(layer)
    with torch.no_grad():
        reference = set_backend(layer, "reference")(x)
        out = set_backend(layer, "triton")(x)
    assert relative_error(reference, out) < 1e-4


def test_weight_only_layers_dequantize_per_call():
    """A W4A16 layer (AdaLN modulation) on the triton backend keeps no dequantized copy: its
    memory stays the 4-bit codes."""
    torch.manual_seed(0)
    layer, x = quantized(nn.Linear(128, 96), torch.randn(2, 128), dict(activations="none", rank=0, smooth=False))
    with torch.no_grad():
        reference = set_backend(layer, "reference")(x)
        out = set_backend(layer.to(DEVICE), "triton")(x.to(DEVICE)).cpu()
    assert relative_error(reference, out) < 1e-5 and not hasattr(layer, "_kernel_plan")
