"""Which kernel runs an `SVDQuantLinear` (its `backend` attribute) and the per-layer state it needs.

    fake       dequantized weights, fake-quantized activations: differentiable, the training path
    reference  integer codes through the pure-torch reference (svdtune.kernels.reference)
    cpu-exact  per-group W4A4, exact up to fp32 summation order (svdtune.kernels.cpu.exact)
    cpu-fast   int8 VNNI GEMM with int8 activations (svdtune.kernels.cpu.w8a8); weight-only layers
               through an int8 weight-only GEMM (svdtune.kernels.cpu.weight_only)
    cpu        the CPU default: cpu-fast (its images stay >= 30 dB PSNR from cpu-exact on the
               reference models, benchmarks/kernels_cpu.py)
    triton     the fused Triton kernels (svdtune.kernels.triton): CUDA tensors, or CPU tensors
               under TRITON_INTERPRET=1; INT4 linear layers (weight-only layers dequantize their
               weight per call, others run the exact path)
    auto       by the input's device: triton on CUDA, the CPU default on CPU, else the reference

A kernel's prepared state (unpacked int8 weight, dequantized residual, ...) is built on first use
and rebuilt whenever one of the layer's tensors was modified in place or replaced (a loaded
checkpoint, a merged adapter), so it can never go stale.
"""

from __future__ import annotations

import os
import warnings

import torch

BACKENDS = ("fake", "reference", "cpu-exact", "cpu-fast", "cpu", "triton", "auto")
CPU_DEFAULT = "cpu-fast"
_warned: set[str] = set()


def resolve(backend: str, device: torch.device) -> str:
    if backend == "cpu":
        backend = CPU_DEFAULT
    elif backend == "auto":
        backend = CPU_DEFAULT if device.type == "cpu" else "triton" if device.type == "cuda" else "reference"
    if backend.startswith("cpu-") and device.type != "cpu":
        _warn_once(f"backend {backend!r} runs on CPU tensors only; {device.type} inputs use the reference kernel")
        return "reference"
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        _warn_once(f"backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1); {device.type} inputs use the "
                   "reference kernel")
        return "reference"
    return backend


def kernel_forward(layer, x: torch.Tensor, act_clip: torch.Tensor | None = None) -> torch.Tensor:
    """`act_clip`: the activation clip per group (None: none). cpu-fast, whose activations are int8,
    does not apply a 4-bit clip."""
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError(f"SVDQuantLinear backend {layer.backend!r} is inference-only; train with backend 'fake'")
    backend = resolve(layer.backend, x.device)
    if backend == "reference":
        from svdtune.kernels import reference

        return reference.svdquant_forward(layer, x, act_clip)
    from svdtune.kernels.cpu import exact, w8a8, weight_only

    if backend == "cpu-fast" and layer.spec.kernel_size is None:
        if layer.spec.activations == "none":
            return weight_only.forward(layer, _plan(layer, backend, weight_only.prepare), x)
        return w8a8.forward(_plan(layer, backend, w8a8.prepare), x)
    if backend == "triton":
        from svdtune.kernels import triton as triton_kernels

        if triton_kernels.supports(layer):
            return triton_kernels.forward(_plan(layer, backend, triton_kernels.prepare), x, act_clip)
        if layer.spec.activations == "none":  # weight-only: dequantize per call, keep only the 4-bit codes
            return layer.fake_forward(x)
    return exact.forward(layer, _plan(layer, "cpu-exact", exact.prepare), x, act_clip)


def _plan(layer, key: str, prepare):
    fingerprint = (key, *((t.data_ptr(), t._version) for t in _tensors(layer)))
    cached = getattr(layer, "_kernel_plan", None)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, prepare(layer))
        layer._kernel_plan = cached
    return cached[1]


def _tensors(layer):
    return [t for t in (layer.smooth, layer.qweight, layer.wscales, layer.wtensor_scale, layer.down, layer.up,
                        layer.bias) if t is not None]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)
