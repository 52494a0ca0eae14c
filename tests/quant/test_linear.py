"""SVDQuantLinear: fake-quant and integer reference agree; training gradients; storage is exact."""

import pytest
import torch
from torch import nn

from svdtune.quant.config import QuantConfig
from svdtune.quant.linear import SVDQuantLinear, set_backend
from svdtune.quant.metrics import relative_error, sqnr_db
from svdtune.quant.quantize import weight_matrix
from svdtune.quant.calibrate import input_rows
from svdtune.quant.svdquant import GELU_SHIFT, SILU_SHIFT, fit_layer

CASES = {  # name: (config overrides, the activation function the input comes out of)
    "svdquant-int4": (dict(rank=8), None),
    "svdquant-uint4-gelu": (dict(rank=8), "gelu"),
    "svdquant-uint4-silu": (dict(rank=8), "silu"),
    "svdquant-nvfp4": (dict(rank=8, weights="nvfp4", activations="nvfp4", group_size=16), None),
    "w8a8": (dict(method="w8a8"), None),
    "nf4": (dict(method="nf4"), None),
    "weight-only-int4": (dict(activations="none", rank=0, smooth=False), None),
}
SHIFTS = {"gelu": GELU_SHIFT, "silu": SILU_SHIFT}


def quantized(module, x, overrides, activation=None):
    x = getattr(torch.nn.functional, activation)(x) if activation else x
    cfg = QuantConfig(**overrides, shrink_grid=[1.0, 0.9], smooth_alphas=[0.25, 0.5, 0.75]).resolved()
    channel_max = x.abs().amax((0, 2, 3)) if isinstance(module, nn.Conv2d) else x.reshape(-1, x.shape[-1]).abs().amax(0)
    fit = fit_layer(weight_matrix(module), input_rows(module, x), channel_max, x.min().item(), cfg)
    return SVDQuantLinear.from_float(module, fit), x


def with_clip(layer: SVDQuantLinear, seed: int = 0) -> SVDQuantLinear:
    """The layer with a random activation clip in [0.6, 1) per group, as training learns one."""
    layer.set_act_clip(torch.rand(layer.spec.act_groups, generator=torch.Generator().manual_seed(seed)) * 0.4 + 0.6)
    return layer


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("clip", [False, True], ids=["", "clip"])
def test_fake_and_integer_forward_agree(case, kind, clip):
    torch.manual_seed(0)
    if kind == "linear":
        module, x = nn.Linear(128, 96), torch.randn(2, 40, 128)
    else:
        module, x = nn.Conv2d(64, 48, 3, padding=1, stride=2), torch.randn(2, 64, 9, 9)
    layer, x = quantized(module, x, *CASES[case])
    if clip:
        with_clip(layer)
    with torch.no_grad():
        fake = layer(x)
        integer = set_backend(layer, "reference")(x)
        reference = module(x)
    assert relative_error(fake, integer) < 1e-3
    assert sqnr_db(reference, fake) > 12  # a real quantization, not a broken one
    activation = CASES[case][1]
    if activation:  # unsigned after the smallest shift that covers the function's minimum
        assert layer.spec.activations == "uint4" and layer.spec.act_shift == SHIFTS[activation]
    if activation == "silu":  # inputs the GELU shift would not have covered
        assert x.min() < -GELU_SHIFT


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_input_gradient_equals_autograd_through_dequantized_weight(kind):
    """The recomputing residual GEMM gives the same input gradient as plain autograd through the
    dequantized weight (straight-through activations), and leaves the storage frozen."""
    torch.manual_seed(0)
    if kind == "linear":
        module, x = nn.Linear(64, 32), torch.randn(16, 64)
    else:
        module, x = nn.Conv2d(64, 32, 3, padding=1, stride=2), torch.randn(2, 64, 7, 7)
    layer, x = quantized(module, x, dict(rank=4))
    upstream = torch.randn_like(layer(x))
    x1 = x.clone().requires_grad_(True)
    (layer(x1) * upstream).sum().backward()
    x2 = x.clone().requires_grad_(True)
    xs = x2 / (layer.smooth if kind == "linear" else layer.smooth.view(1, -1, 1, 1))
    y = layer.residual_gemm(xs, layer.residual_weight()) + layer.branch(x2)  # straight-through: Q is identity
    (y * upstream).sum().backward()
    assert relative_error(x2.grad, x1.grad) < 1e-5
    assert not any(p.requires_grad for p in layer.parameters())


def test_dtype_cast_keeps_codes_and_scales_exact():
    torch.manual_seed(0)
    layer, _ = quantized(nn.Linear(64, 32), torch.randn(16, 64), dict(rank=4))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.to(torch.float16)
    assert layer.wscales.dtype == torch.bfloat16 and layer.qweight.dtype == torch.uint8
    assert torch.equal(layer.wscales, before["wscales"]) and torch.equal(layer.qweight, before["qweight"])
    assert layer.down.dtype == torch.float16  # the 16-bit branch follows the model


def test_low_rank_branch_beats_smoothing_alone_on_outliers():
    # Weight outliers that smoothing cannot move: SVDQuant's branch absorbs them.
    torch.manual_seed(0)
    module = nn.Linear(256, 256)
    with torch.no_grad():
        u, v = torch.randn(256, 4), torch.randn(4, 256)
        module.weight += 0.5 * u @ v / 4
    x = torch.randn(512, 256)
    x[:, :3] *= 20  # activation outlier channels
    y = module(x).detach()
    errors = {}
    for name, overrides in {"rtn": dict(method="rtn"), "smoothquant": dict(method="smoothquant"),
                            "svdquant": dict(rank=16)}.items():
        layer, _ = quantized(module, x, overrides)
        errors[name] = sqnr_db(y, layer(x).detach())
    assert errors["smoothquant"] > errors["rtn"] + 1
    assert errors["svdquant"] > errors["smoothquant"] + 3, errors
