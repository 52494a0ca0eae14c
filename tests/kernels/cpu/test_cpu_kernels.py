"""CPU kernels against the pure-torch reference: cpu-exact to fp32 rounding, cpu-fast as accurate
as its int8 activations allow; prepared state follows the layer's tensors."""

import pytest
import torch
from torch import nn

from svdtune.quant.linear import set_backend
from svdtune.quant.metrics import relative_error, sqnr_db
from tests.quant.test_linear import CASES, quantized, with_clip


def _layer(case, kind, seed=0):
    torch.manual_seed(seed)
    if kind == "linear":
        module, x = nn.Linear(192, 80), torch.randn(3, 37, 192)
    else:
        module, x = nn.Conv2d(64, 48, 3, padding=1, stride=2), torch.randn(2, 64, 9, 9)
    layer, x = quantized(module, x, *CASES[case])
    return module, layer, x


def _run(layer, backend, x):
    with torch.no_grad():
        return set_backend(layer, backend)(x)


@pytest.mark.parametrize("case", ["svdquant-int4", "svdquant-uint4-gelu", "svdquant-uint4-silu", "svdquant-nvfp4"])
@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("clip", [False, True], ids=["", "clip"])
def test_cpu_exact_matches_reference(case, kind, clip):
    _, layer, x = _layer(case, kind)
    if clip:
        with_clip(layer)
    assert relative_error(_run(layer, "reference", x), _run(layer, "cpu-exact", x)) < 1e-5


@pytest.mark.parametrize("case", ["svdquant-int4", "svdquant-uint4-gelu", "svdquant-uint4-silu", "svdquant-nvfp4"])
def test_cpu_fast_is_close_to_reference_and_not_further_from_16_bit(case):
    """Fast mode keeps 8-bit activations where the exact layer keeps 4: it may differ from the
    reference by the 4-bit activation error, but must be at least as close to the 16-bit layer."""
    module, layer, x = _layer(case, "linear")
    with torch.no_grad():
        full = module(x)
    reference, fast = _run(layer, "reference", x), _run(layer, "cpu-fast", x)
    assert sqnr_db(reference, fast) > 15
    assert sqnr_db(full, fast) >= sqnr_db(full, reference) - 0.1


def test_cpu_fast_weight_only_layer_matches_reference():
    """A weight-only layer keeps its 16-bit inputs in fast mode too; only its weight is re-rounded
    to int8 per output channel (about 7 bits against the 4 it came from)."""
    _, layer, x = _layer("weight-only-int4", "linear")
    reference, fast = _run(layer, "reference", x), _run(layer, "cpu-fast", x)
    assert sqnr_db(reference, fast) > 30
    assert hasattr(layer, "_kernel_plan") and layer._kernel_plan[1].weight.dtype == torch.int8


def test_cpu_backend_default_and_auto_run_fast_mode_on_cpu():
    _, layer, x = _layer("svdquant-int4", "linear")
    fast = _run(layer, "cpu-fast", x)
    assert torch.equal(_run(layer, "cpu", x), fast) and torch.equal(_run(layer, "auto", x), fast)


def test_prepared_state_follows_in_place_changes():
    """A merged adapter or a loaded checkpoint changes the layer's tensors in place: the kernel
    must not keep running the old ones."""
    _, layer, x = _layer("svdquant-int4", "linear")
    for backend in ("cpu-fast", "cpu-exact"):
        before = _run(layer, backend, x)
        with torch.no_grad():
            layer.up.mul_(2)
        after, expected = _run(layer, backend, x), _run(layer, "reference", x)
        assert relative_error(before, after) > 1e-3
        assert sqnr_db(expected, after) > 15


def test_kernel_backends_refuse_to_train():
    _, layer, x = _layer("svdquant-int4", "linear")
    set_backend(layer, "cpu")
    with pytest.raises(RuntimeError, match="inference-only.*'fake'"):
        layer(x.requires_grad_(True))
    with pytest.raises(ValueError, match="backend 'gpu' is not one of"):
        set_backend(layer, "gpu")
