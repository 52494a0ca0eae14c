"""`SVDQuantLinear`: one W4A4 layer with a 16-bit low-rank branch, replacing nn.Linear or nn.Conv2d.

    y = Q(x / lambda) Q(R)^T + x down^T up^T + b,    down = L1 / lambda

The branch is stored acting on the unsmoothed input (the fitted L1 of the smoothed weight divided
by lambda per input feature), as the fused kernels and LoRA (A reads x) take it: merging an adapter
is then a plain concatenation and the export stores `down` as it is.

It holds the smoothing factors (C,), the packed residual codes and scales, the branch and, when an
adapter that learned one was merged, an activation clip per channel group (scale = clip * absmax /
qmax instead of absmax / qmax). Its
`backend` picks how it runs: "fake" (dequantized weights and fake-quantized activations with
straight-through rounding, differentiable w.r.t. the input and LoRA on top: the training path) or
one of the inference kernels of `svdtune.kernels.dispatch` (reference, cpu, ...).
A convolution is the GEMM of its implicit im2col with K ordered (kernel position, channel), so
activation groups are channel groups of one pixel and the residual stays a plain (N, K) matrix.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as Fn
from torch import nn

from svdtune.kernels.packing import pack_nibbles, unpack_nibbles
from svdtune.quant import formats as F
from svdtune.quant.svdquant import LayerQuant, fake_act



@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Everything needed to rebuild an empty layer of the same shape (stored in the manifest)."""
    in_channels: int
    out_channels: int
    rank: int
    weights: str
    activations: str
    group_size: int                             # effective: divides in_channels
    act_shift: float = 0.0
    bias: bool = True
    act_clip: bool = False                      # has an activation clip per channel group (lora.act_clip)
    kernel_size: tuple[int, int] | None = None  # None: a linear layer
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    @property
    def positions(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1] if self.kernel_size else 1

    @property
    def in_features(self) -> int:  # K of the matrix view
        return self.in_channels * self.positions

    @property
    def act_groups(self) -> int:  # activation groups per token (per pixel): one clip each
        return self.in_channels // F.group_of(self.in_channels, self.group_size)

    @classmethod
    def from_dict(cls, d: dict) -> "LayerSpec":
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


def pack_codes(codes: torch.Tensor, fmt: str) -> torch.Tensor:
    return codes.to(torch.int8) if fmt == "int8" else pack_nibbles(codes)


def unpack_codes(stored: torch.Tensor, fmt: str) -> torch.Tensor:
    return stored if fmt == "int8" else unpack_nibbles(stored, signed=fmt == "int4")


class SVDQuantLinear(nn.Module):
    # exact formats, never cast by model.to(dtype); a rounded clip would move every activation scale
    STORAGE = ("qweight", "wscales", "wtensor_scale", "act_clip")

    def __init__(self, spec: LayerSpec, dtype: torch.dtype = torch.float32, device=None):
        super().__init__()
        self.spec = spec
        self.in_features, self.out_features = spec.in_features, spec.out_channels
        self.backend = "fake"
        n, k, g = spec.out_channels, spec.in_features, F.group_of(spec.in_channels, spec.group_size)
        kw = dict(dtype=dtype, device=device)
        self.register_buffer("smooth", torch.ones(spec.in_channels, **kw))
        self.register_buffer("qweight", torch.zeros(n, k if spec.weights == "int8" else k // 2,
                                                    dtype=torch.int8 if spec.weights == "int8" else torch.uint8,
                                                    device=device))
        self.register_buffer("wscales", torch.zeros(n, k // g, dtype=F.scale_dtype(spec.weights), device=device))
        self.register_buffer("wtensor_scale", torch.ones((), device=device) if spec.weights == "nvfp4" else None)
        self.register_buffer("down", torch.zeros(spec.rank, k, **kw))
        self.register_buffer("up", torch.zeros(n, spec.rank, **kw))
        self.bias = nn.Parameter(torch.zeros(n, **kw), requires_grad=False) if spec.bias else None
        # activation range scale per group (scale = clip * absmax / qmax), learned by training (act_clip)
        self.register_buffer("act_clip", torch.ones(spec.act_groups, device=device) if spec.act_clip else None)

    @staticmethod
    def spec_for(module: nn.Linear | nn.Conv2d, rank: int, weights: str, activations: str, group_size: int,
                 act_shift: float = 0.0) -> LayerSpec:
        conv = isinstance(module, nn.Conv2d)
        return LayerSpec(
            in_channels=module.in_channels if conv else module.in_features,
            out_channels=module.out_channels if conv else module.out_features,
            rank=rank, weights=weights, activations=activations, group_size=group_size, act_shift=act_shift,
            bias=module.bias is not None,
            **(dict(kernel_size=module.kernel_size, stride=module.stride, padding=module.padding,
                    dilation=module.dilation) if conv else {}))

    @classmethod
    def from_float(cls, module: nn.Linear | nn.Conv2d, fit: LayerQuant) -> "SVDQuantLinear":
        rank = 0 if fit.down is None else fit.down.shape[0]
        spec = cls.spec_for(module, rank, fit.residual.fmt, fit.act_format, fit.group_size, fit.act_shift)
        dtype = module.weight.dtype
        layer = cls(spec, dtype=dtype, device=module.weight.device)
        with torch.no_grad():
            if fit.smooth is not None:
                layer.smooth.copy_(fit.smooth)
            layer.qweight.copy_(pack_codes(fit.residual.codes, spec.weights))
            layer.wscales.copy_(fit.residual.scales)
            if fit.residual.tensor_scale is not None:
                layer.wtensor_scale.copy_(fit.residual.tensor_scale)
            if spec.rank:
                layer.down.copy_(fit.down / fit.smooth.repeat(spec.positions) if fit.smooth is not None else fit.down)
                layer.up.copy_(fit.up)
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        return layer

    # --- views of the stored residual -------------------------------------------------------
    def residual(self) -> F.QTensor:
        s = self.spec
        return F.QTensor(unpack_codes(self.qweight, s.weights), self.wscales, s.weights, s.group_size,
                         self.wtensor_scale)

    def residual_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dequantized residual (N, K)."""
        s, dtype = self.spec, dtype or self.smooth.dtype
        if s.weights == "int8":
            return F.dequantize(self.residual()).to(dtype)
        return F.dequantize_packed(self.qweight, self.wscales, s.weights, s.group_size, self.wtensor_scale, dtype)

    def as_conv_weight(self, w: torch.Tensor) -> torch.Tensor:
        """(M, K) matrix view -> (M, C, kh, kw) convolution weight."""
        kh, kw = self.spec.kernel_size
        return w.reshape(w.shape[0], kh, kw, self.spec.in_channels).permute(0, 3, 1, 2)

    def set_act_clip(self, clip: torch.Tensor | None) -> None:
        """Give the layer an activation clip per group (None: none); its spec records whether it has one."""
        self.act_clip = None if clip is None else clip.float()
        self.spec = dataclasses.replace(self.spec, act_clip=clip is not None)

    def _shift(self) -> torch.Tensor | float:
        return self.spec.act_shift / self.smooth if self.spec.act_shift else 0.0

    # --- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, act_clip: torch.Tensor | None = None) -> torch.Tensor:
        """`act_clip`: an unmerged adapter's activation clip, multiplied into the layer's own."""
        if self.act_clip is not None:
            act_clip = self.act_clip if act_clip is None else self.act_clip * act_clip
        if self.backend == "fake":
            return self.fake_forward(x, clip=act_clip)
        from svdtune.kernels.dispatch import kernel_forward  # kernels read quant formats; import at use

        return kernel_forward(self, x, act_clip)

    def fake_forward(self, x: torch.Tensor, residual: torch.Tensor | None = None, act=fake_act,
                     clip: torch.Tensor | None = None) -> torch.Tensor:
        """`residual`: the dequantized residual when the caller keeps one (the exact CPU kernel);
        `act`: the activation fake-quantizer (a compiled one there); `clip`: per activation group."""
        s = self.spec
        if s.kernel_size is None:
            xs = x / self.smooth
            xq = act(xs, s.activations, s.group_size, self._shift(), clip)
        else:
            xs = x / self.smooth.view(1, -1, 1, 1)
            xq = act(xs.movedim(1, -1), s.activations, s.group_size, self._shift(), clip).movedim(-1, 1)
        if xq.requires_grad:
            y = ResidualGEMM.apply(xq, self)
        else:
            y = self.residual_gemm(xq, self.residual_weight(x.dtype) if residual is None else residual.to(x.dtype))
        if self.bias is not None:
            y = y + (self.bias if s.kernel_size is None else self.bias.view(-1, 1, 1))
        return y + self.branch(x)

    def residual_gemm(self, xq: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """xq @ w^T (linear) or the convolution with w's kernel view, no bias."""
        return Fn.linear(xq, w) if self.spec.kernel_size is None else self._conv(xq, self.as_conv_weight(w))

    def branch(self, x: torch.Tensor) -> torch.Tensor | float:
        """The 16-bit low-rank path (on the unsmoothed input)."""
        if not self.spec.rank:
            return 0.0
        if self.spec.kernel_size is None:
            return Fn.linear(Fn.linear(x, self.down), self.up)
        return Fn.conv2d(self._conv(x, self.as_conv_weight(self.down)), self.up[:, :, None, None])

    def _conv(self, x, weight, bias=None):
        s = self.spec
        return Fn.conv2d(x, weight, bias, s.stride, s.padding, s.dilation)

    def _apply(self, fn, recurse=True):
        # model.to(dtype) must not re-round codes or scales: they keep their dtype, only move.
        stored = {n: self._buffers.pop(n) for n in self.STORAGE}
        super()._apply(fn, recurse)
        for n, t in stored.items():
            self._buffers[n] = None if t is None else t.to(fn(torch.empty(0, device=t.device)).device)
        return self

    def extra_repr(self) -> str:
        s = self.spec
        kind = f"conv{s.kernel_size[0]}x{s.kernel_size[1]}" if s.kernel_size else "linear"
        return (f"{kind}, in={s.in_channels}, out={s.out_channels}, W={s.weights} A={s.activations} "
                f"g={s.group_size} rank={s.rank}, backend={self.backend}")


class ResidualGEMM(torch.autograd.Function):
    """The frozen 4-bit residual GEMM for training: backward re-dequantizes the codes instead of
    keeping every layer's dequantized weight alive until backward (which would hold the whole
    backbone in 16/32-bit again). bitsandbytes' 4-bit matmul does the same for NF4."""

    @staticmethod
    def forward(ctx, xq: torch.Tensor, layer: SVDQuantLinear) -> torch.Tensor:
        ctx.layer, ctx.input_shape = layer, xq.shape
        return layer.residual_gemm(xq, layer.residual_weight(xq.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        layer = ctx.layer
        w = layer.residual_weight(grad.dtype)
        s = layer.spec
        if s.kernel_size is None:
            return grad @ w, None
        return torch.nn.grad.conv2d_input(ctx.input_shape, layer.as_conv_weight(w), grad, s.stride, s.padding,
                                          s.dilation), None


def set_backend(model: nn.Module, backend: str) -> nn.Module:
    from svdtune.kernels.dispatch import BACKENDS

    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    for m in model.modules():
        if isinstance(m, SVDQuantLinear):
            m.backend = backend
    return model
