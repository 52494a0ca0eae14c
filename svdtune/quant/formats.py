"""Group-wise number formats for weights and activations.

A tensor is quantized along its last dimension in groups of `group_size` input channels (0: one
group per row, i.e. per output channel for weights and per token for activations):

    int4   symmetric, codes -8..7, scale = absmax / 7 (bf16)
    uint4  codes 0..15 for non-negative inputs, scale = max / 15 (bf16); the layer shifts
           post-GELU activations to be non-negative first
    int8   symmetric, codes -127..127, scale = absmax / 127 (bf16)
    nvfp4  E2M1 values {0, .5, 1, 1.5, 2, 3, 4, 6} with a sign (code = sign << 3 | index), one FP8
           E4M3 scale per group of 16 and one fp32 scale per tensor
    nf4    bitsandbytes' NormalFloat4 code book, scale = absmax (fp16); weights only
"""

from __future__ import annotations

import dataclasses
import functools

import torch

INT_QMAX = {"int4": 7, "uint4": 15, "int8": 127}
INT_RANGE = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-127, 127)}
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
FP8_MAX = 448.0  # largest float8_e4m3fn
TINY = 1e-12
# Group scales of the integer formats: bf16, the range of fp32 (activation outliers can pass fp16's
# 65504) with 8 bits of precision, far finer than the 4-bit values they scale. NF4 (weights only)
# keeps fp16, nearer to bitsandbytes' fp32 absmax, whose code book it reproduces.
SCALE_DTYPE = torch.bfloat16
SCALE_DTYPES = {"nvfp4": torch.float8_e4m3fn, "nf4": torch.float16}


def scale_dtype(fmt: str) -> torch.dtype:
    return SCALE_DTYPES.get(fmt, SCALE_DTYPE)


@dataclasses.dataclass
class QTensor:
    """Codes and scales of a tensor quantized along its last dimension."""
    codes: torch.Tensor          # int8, the input's shape
    scales: torch.Tensor         # (..., groups): bf16 (fp16 for nf4), or float8_e4m3fn for nvfp4
    fmt: str
    group_size: int              # effective group (the row length when per-channel)
    tensor_scale: torch.Tensor | None = None  # nvfp4: fp32 scalar


def group_of(k: int, group_size: int) -> int:
    group = group_size or k
    if k % group:
        raise ValueError(f"{k} input channels are not a multiple of the group size {group}")
    return group


@functools.cache
def nf4_code_book() -> torch.Tensor:
    # The 16 NormalFloat4 values, taken from bitsandbytes so our NF4 is exactly its NF4.
    from bitsandbytes.functional import get_4bit_type

    return get_4bit_type("nf4", device="cpu").float()


def grouped(x: torch.Tensor, fmt: str, group: int) -> torch.Tensor:
    """x in fp32 as (..., groups, group); unsigned formats clamp below 0."""
    xg = x.float().reshape(*x.shape[:-1], -1, group)
    return xg.clamp_min(0) if fmt == "uint4" else xg


def quantize(x: torch.Tensor, fmt: str, group_size: int, shrink: torch.Tensor | float = 1.0) -> QTensor:
    """Round-to-nearest; `shrink` (scalar or per group, shape (..., groups, 1)) clips the range."""
    group = group_of(x.shape[-1], group_size)
    xg = grouped(x, fmt, group)
    if fmt in INT_QMAX:
        scale = _int_scale(xg, fmt, shrink)
        lo, hi = INT_RANGE[fmt]
        codes = (xg / scale.float()).round().clamp(lo, hi)
        return QTensor(_flat(codes, x), scale.squeeze(-1), fmt, group)
    amax = xg.abs().amax(-1, keepdim=True) * shrink
    if fmt == "nvfp4":
        grid = E2M1.to(x.device)
        tensor_scale = (x.float().abs().amax() / (grid[-1] * FP8_MAX)).clamp_min(TINY)
        scale = (amax / grid[-1] / tensor_scale).to(torch.float8_e4m3fn)
        step = (scale.float() * tensor_scale).clamp_min(TINY)
        index = torch.bucketize((xg.abs() / step).clamp(max=grid[-1]).contiguous(), (grid[1:] + grid[:-1]) / 2)
        codes = torch.where(xg < 0, index + 8, index)
        return QTensor(_flat(codes, x), scale.squeeze(-1), fmt, group, tensor_scale)
    if fmt == "nf4":
        book = nf4_code_book().to(x.device)
        scale = amax.clamp_min(TINY).to(scale_dtype(fmt))
        codes = torch.bucketize(xg / scale.float(), (book[1:] + book[:-1]) / 2)  # nearest (sorted book)
        return QTensor(_flat(codes, x), scale.squeeze(-1), fmt, group)
    raise ValueError(f"unknown number format {fmt!r}; expected one of int4, uint4, int8, nvfp4, nf4")


def _int_scale(xg: torch.Tensor, fmt: str, shrink: torch.Tensor | float) -> torch.Tensor:
    """An integer format's stored scale per group of `xg` (..., groups, group): shrunk absmax / qmax."""
    return (xg.abs().amax(-1, keepdim=True) * shrink / INT_QMAX[fmt]).clamp_min(TINY).to(SCALE_DTYPE)


def _flat(codes: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return codes.reshape(like.shape).to(torch.int8)


def code_values(q: QTensor) -> torch.Tensor:
    """The codes as the numbers they stand for, before scaling (exact in fp32)."""
    if q.fmt in INT_QMAX:
        return q.codes.float()
    if q.fmt == "nvfp4":
        c, grid = q.codes.long(), E2M1.to(q.codes.device)
        return torch.where(c >= 8, -grid[c & 7], grid[c & 7])
    return nf4_code_book().to(q.codes.device)[q.codes.long()]


def group_scales(q: QTensor) -> torch.Tensor:
    """Per-group scales as fp32, (..., groups)."""
    s = q.scales.float()
    return s * q.tensor_scale if q.tensor_scale is not None else s


def dequantize(q: QTensor) -> torch.Tensor:
    v = code_values(q)
    v = v.reshape(*v.shape[:-1], -1, q.group_size) * group_scales(q).unsqueeze(-1)
    return v.reshape(q.codes.shape)


@functools.cache
def _byte_values(fmt: str) -> torch.Tensor:
    """(256, 2): the values of the two 4-bit codes in a byte, low nibble first (the packing order
    of svdtune.kernels.packing)."""
    nibbles = torch.arange(16)
    if fmt == "int4":  # two's complement
        nibbles = torch.where(nibbles > 7, nibbles - 16, nibbles)
    values = code_values(QTensor(nibbles.to(torch.int8), torch.ones(1), fmt, 16))
    byte = torch.arange(256)
    return torch.stack((values[byte & 15], values[byte >> 4]), dim=-1).contiguous()


@functools.cache
def _byte_pairs(fmt: str, dtype: torch.dtype) -> torch.Tensor:
    """(256,): a byte's two values in `dtype` as one integer twice as wide, so that the lookup
    gathers single elements rather than rows of two (1.5x faster)."""
    wide = {2: torch.int32, 4: torch.int64}[dtype.itemsize]
    return _byte_values(fmt).to(dtype).contiguous().view(wide).reshape(256)


def dequantize_packed(packed: torch.Tensor, scales: torch.Tensor, fmt: str, group_size: int,
                      tensor_scale: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`dequantize` of nibble-packed 4-bit codes (..., K / 2) -> (..., K) in `dtype`, the same
    numbers rounded once. One table lookup per byte instead of unpacking, sign-extending and
    converting: about 6x faster (4 against 24 ms for 4096 x 1024), which matters because training
    dequantizes every residual three times a step (forward, recomputation, backward)."""
    # An int4 code times a scale of `dtype` rounds once in `dtype` as it would from fp32: no fp32 copy.
    compute = dtype if fmt == "int4" and scales.dtype == dtype else torch.float32
    table = _byte_pairs(fmt, compute).to(packed.device)
    values = table.index_select(0, packed.reshape(-1).int()).view(compute)
    values = values.reshape(*packed.shape[:-1], -1, group_size)
    s = scales.to(compute) if tensor_scale is None else scales.float() * tensor_scale
    return (values * s.unsqueeze(-1)).reshape(*packed.shape[:-1], -1).to(dtype)


def round_trip(x: torch.Tensor, fmt: str, group_size: int, shrink: torch.Tensor | float = 1.0) -> torch.Tensor:
    """dequantize(quantize(x)) in x's dtype. Integer formats take one fp32 buffer and no int8
    codes in between: the same numbers in fewer passes (training fake-quantizes the activations
    of every layer, forward and recomputation, every step)."""
    if fmt not in INT_QMAX:
        return dequantize(quantize(x, fmt, group_size, shrink)).to(x.dtype)
    xg = grouped(x, fmt, group_of(x.shape[-1], group_size))
    scale = _int_scale(xg, fmt, shrink).float()
    lo, hi = INT_RANGE[fmt]
    return (xg / scale).round_().clamp_(lo, hi).mul_(scale).reshape(x.shape).to(x.dtype)


def fake_quantize(x: torch.Tensor, fmt: str, group_size: int, clip: torch.Tensor | None = None) -> torch.Tensor:
    """Quantize-dequantize with a straight-through gradient (identity w.r.t. x).

    `clip` (groups,) scales each group's range: scale = clip * absmax / qmax, values beyond it
    saturate. A clip that requires grad is learned as LSQ learns its step size (Esser et al. 2020;
    EfficientDM's activation scales): the output's gradient w.r.t. the scale is round(v) - v inside
    the range and the bound outside, and x gets gradient only inside. Integer formats only."""
    if clip is None or not clip.requires_grad:
        shrink = 1.0 if clip is None else clip.detach().float().unsqueeze(-1)
        xq = round_trip(x.detach(), fmt, group_size, shrink)
        return x + (xq - x).detach()
    if fmt not in INT_QMAX:
        raise ValueError(f"a learned activation clip needs an integer format (int4, uint4, int8), not {fmt!r}")
    return LearnedClipQuantize.apply(x, clip, fmt, group_size)


class LearnedClipQuantize(torch.autograd.Function):
    """`fake_quantize` with a learned clip. Backward recomputes the codes from the input rather than
    letting autograd keep the formula's fp32 intermediates: those would hold several copies of
    every activation until backward (ref-dit training: 1.4x the peak memory)."""

    @staticmethod
    def forward(ctx, x, clip, fmt, group_size):
        q = quantize(x, fmt, group_size, clip.float().unsqueeze(-1))
        ctx.save_for_backward(x, q.scales)
        ctx.fmt, ctx.group_size = fmt, group_size
        return dequantize(q).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, scales = ctx.saved_tensors
        xg = grouped(x, ctx.fmt, group_of(x.shape[-1], ctx.group_size))
        amax, scale = xg.abs().amax(-1, keepdim=True), scales.float().unsqueeze(-1)
        lo, hi = INT_RANGE[ctx.fmt]
        v = xg / scale
        codes = v.round()
        inside = (codes >= lo) & (codes <= hi)
        g = grad.float().reshape(xg.shape)
        passes = inside & (x.reshape(xg.shape) >= 0) if ctx.fmt == "uint4" else inside  # uint4 clamps below 0
        # LSQ: d out / d scale = round(v) - v inside the range, the bound outside; d scale / d clip = absmax / qmax
        d_scale = torch.where(inside, codes - v, codes.clamp(lo, hi))
        d_clip = ((g * d_scale).sum(-1, keepdim=True) * amax / INT_QMAX[ctx.fmt]).reshape(-1, xg.shape[-2]).sum(0)
        return (g * passes).reshape(x.shape).to(x.dtype), d_clip, None, None


def quantize_weight(w: torch.Tensor, fmt: str, group_size: int, shrink_grid=(1.0,),
                    importance: torch.Tensor | None = None) -> QTensor:
    """Quantize a weight (N, K), choosing per group the range shrink that minimises the squared
    error weighted by `importance` (K,), e.g. the mean squared input of each channel."""
    if len(shrink_grid) == 1:
        return quantize(w, fmt, group_size, shrink_grid[0])
    group = group_of(w.shape[-1], group_size)
    imp = torch.ones(w.shape[-1], device=w.device) if importance is None else importance.float()
    imp = imp.reshape(-1, group)
    wg = w.float().reshape(w.shape[0], -1, group)
    errors = []
    for s in shrink_grid:
        dq = dequantize(quantize(w, fmt, group_size, s)).reshape(wg.shape)
        errors.append(((dq - wg) ** 2 * imp).sum(-1))
    best = torch.tensor(shrink_grid, device=w.device)[torch.stack(errors).argmin(0)]
    return quantize(w, fmt, group_size, best.unsqueeze(-1))
