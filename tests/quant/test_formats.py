import pytest
import torch

from svdtune.quant import formats as F
from svdtune.quant.metrics import relative_error, sqnr_db


def test_int4_codes_and_scales():
    x = torch.tensor([[0.0, 7.0, -3.5, 1.0]])
    q = F.quantize(x, "int4", 4)
    assert q.codes.tolist() == [[0, 7, -4, 1]] or q.codes.tolist() == [[0, 7, -3, 1]]  # -3.5 rounds to even
    assert q.scales.dtype == torch.bfloat16 and q.scales.item() == 1.0
    assert torch.allclose(F.dequantize(q), q.codes.float())


@pytest.mark.parametrize("fmt,group,min_db", [("int4", 64, 17), ("nvfp4", 16, 18), ("int8", 0, 38), ("nf4", 64, 18)])
def test_gaussian_sqnr(fmt, group, min_db):
    # Expected SQNR of round-to-nearest on N(0, 1): about 20 dB for 4-bit formats, 40 for int8.
    x = torch.randn(256, 512, generator=torch.Generator().manual_seed(0))
    q = F.quantize(x, fmt, group)
    assert q.codes.dtype == torch.int8
    assert sqnr_db(x, F.dequantize(q)) > min_db


def test_uint4_uses_sixteen_levels_for_non_negative_inputs():
    x = torch.rand(64, 64)
    assert sqnr_db(x, F.dequantize(F.quantize(x, "uint4", 64))) > sqnr_db(x, F.dequantize(F.quantize(x, "int4", 64))) + 4


def test_nvfp4_values_and_scales():
    x = torch.tensor([[6.0, -3.0, 0.5, 0.2] * 4])
    q = F.quantize(x, "nvfp4", 16)
    assert q.scales.dtype == torch.float8_e4m3fn and q.tensor_scale is not None
    assert F.dequantize(q)[0, :3].tolist() == [6.0, -3.0, 0.5]
    assert set(F.code_values(q).abs().unique().tolist()) <= set(F.E2M1.tolist())


def test_nf4_matches_bitsandbytes():
    from bitsandbytes.functional import dequantize_4bit, quantize_4bit

    w = torch.randn(128, 256, generator=torch.Generator().manual_seed(1))
    packed, state = quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
    theirs = dequantize_4bit(packed, state)
    ours = F.dequantize(F.quantize(w, "nf4", 64))
    # Same code book and rounding; our fp16 scales (bnb keeps fp32) move a few values sitting on a
    # rounding midpoint to the neighbouring code.
    assert (theirs - ours).abs().gt(1e-3).float().mean() < 1e-3
    assert sqnr_db(theirs, ours) > 40


def test_fake_quantize_is_straight_through():
    x = torch.randn(8, 64, requires_grad=True)
    F.fake_quantize(x, "int4", 64).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("fmt", ["int4", "uint4"])
def test_learned_clip_has_lsq_gradients(fmt):
    """With a clip that requires grad, fake quantization is quantize(x, shrink=clip) forward, and
    backward is LSQ's: x passes the gradient inside the range only; the scale gets round(v) - v
    inside and the saturated code outside, times d scale / d clip = absmax / qmax."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 128, generator=g) * 2 + (3 if fmt == "uint4" else 0)
    x = x.clamp_min(0) if fmt == "uint4" else x
    x.requires_grad_(True)
    clip = torch.tensor([0.7, 0.9], requires_grad=True)
    upstream = torch.randn(6, 128, generator=g)
    out = F.fake_quantize(x, fmt, 64, clip)
    assert torch.equal(out.detach(), F.dequantize(F.quantize(x.detach(), fmt, 64, clip.detach().unsqueeze(-1))))
    (out * upstream).sum().backward()

    xg, ug = x.detach().reshape(6, 2, 64), upstream.reshape(6, 2, 64)
    amax = xg.abs().amax(-1, keepdim=True)
    scale = (clip.detach().unsqueeze(-1) * amax / F.INT_QMAX[fmt]).to(torch.bfloat16).float()
    v = xg / scale
    lo, hi = F.INT_RANGE[fmt]
    inside = (v.round() >= lo) & (v.round() <= hi)
    d_scale = torch.where(inside, v.round() - v, v.round().clamp(lo, hi))
    expected_clip = (ug * d_scale * amax / F.INT_QMAX[fmt]).sum((0, 2))
    assert inside.float().mean() < 0.99  # the clip saturates some values
    assert torch.allclose(x.grad, upstream * inside.reshape(6, 128), atol=1e-6)  # x / scale * scale rounds
    assert relative_error(clip.grad, expected_clip) < 1e-4


def test_shrink_search_never_worse_than_full_range():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(2))
    w[0, 0] = 12.0  # one outlier stretches its group's range
    full = F.dequantize(F.quantize_weight(w, "int4", 64))
    searched = F.dequantize(F.quantize_weight(w, "int4", 64, shrink_grid=(1.0, 0.9, 0.8, 0.7)))
    assert sqnr_db(w, searched) >= sqnr_db(w, full)


def test_bad_group_size_names_the_numbers():
    with pytest.raises(ValueError, match="100 input channels are not a multiple of the group size 64"):
        F.quantize(torch.randn(2, 100), "int4", 64)


@pytest.mark.parametrize("fmt,group", [("int4", 64), ("nvfp4", 16), ("nf4", 64)])
def test_dequantize_packed_equals_unpacking_first(fmt, group):
    from svdtune.kernels.packing import pack_nibbles, unpack_nibbles

    torch.manual_seed(0)
    q = F.quantize(torch.randn(48, 256) * 3, fmt, group)
    packed = pack_nibbles(q.codes)
    assert torch.equal(unpack_nibbles(packed, signed=fmt == "int4"), q.codes)
    assert torch.equal(F.dequantize_packed(packed, q.scales, fmt, group, q.tensor_scale), F.dequantize(q))
    for dtype in (torch.bfloat16, torch.float16):  # int4 with bf16 scales computes in bf16: same rounding
        assert torch.equal(F.dequantize_packed(packed, q.scales, fmt, group, q.tensor_scale, dtype),
                           F.dequantize(q).to(dtype))


@pytest.mark.parametrize("fmt", ["int4", "uint4", "int8", "nvfp4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_is_dequantize_of_quantize_bit_for_bit(fmt, dtype):
    """The fused integer path must give exactly the numbers of the two-step definition."""
    torch.manual_seed(0)
    x = (torch.randn(3, 5, 128) * torch.logspace(-3, 3, 128)).to(dtype)  # outlier channels, tiny groups
    x[0, 0, :64] = 0  # an all-zero group: the TINY scale floor
    shrink = torch.rand(3, 5, 128 // 16, 1) * 0.5 + 0.5
    for s in (1.0, shrink):
        expected = F.dequantize(F.quantize(x, fmt, 16, s)).to(dtype)
        assert torch.equal(F.round_trip(x, fmt, 16, s), expected)
