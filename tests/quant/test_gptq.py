"""GPTQ on the 4-bit residual: lower output error than rounding to nearest on the inputs it saw,
the same stored format."""

import pytest
import torch

from svdtune.quant import formats as F
from svdtune.quant.gptq import gptq_quantize
from svdtune.quant.metrics import sqnr_db


def test_gptq_beats_round_to_nearest_on_inputs_like_its_calibration():
    torch.manual_seed(0)
    k, n = 256, 64
    mix = torch.randn(k, k) / k ** 0.5 + torch.eye(k)  # correlated channels, as real activations are
    x = (torch.randn(4096, k) * torch.rand(k) * 3) @ mix
    calibration, held_out = x[:2048], x[2048:]
    w = torch.randn(n, k)
    q = gptq_quantize(w, calibration.T @ calibration / len(calibration), "int4", 64, (1.0, 0.9, 0.8))
    rtn = F.quantize_weight(w, "int4", 64, (1.0, 0.9, 0.8), calibration.pow(2).mean(0))
    assert q.codes.shape == rtn.codes.shape and q.scales.shape == rtn.scales.shape
    assert q.scales.dtype == rtn.scales.dtype and q.codes.min() >= -8 and q.codes.max() <= 7
    y = held_out @ w.T
    gain = sqnr_db(y, held_out @ F.dequantize(q).T) - sqnr_db(y, held_out @ F.dequantize(rtn).T)
    assert gain > 1.0, gain  # measured 3.3 dB


def test_gptq_refuses_code_books():
    with pytest.raises(ValueError, match="nf4"):
        gptq_quantize(torch.randn(4, 64), torch.eye(64), "nf4", 64)
