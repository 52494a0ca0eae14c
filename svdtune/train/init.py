"""Adapter initialisation on the 4-bit backbone.

    zero           B = 0 (QLoRA): the adapted model starts as the 4-bit model.
    loftq          A, B from the top-r' SVD of each layer's quantization error
                   E = W' - L1 L2 - deq(Q(R)) (smoothed space, W' = W * lambda), so the adapted layer
                   starts closer to its 16-bit weight (LoftQ, ICLR 2024, on top of SVDQuant's branch).
    loftq-requant  LoftQ's alternation: re-quantize the residual around the adapter,
                   R = Q(W' - L1 L2 - A B), then refit A B to the new error, for `iters` rounds, keeping
                   the round with the smallest error. This rewrites the backbone's 4-bit codes.

The error is measured in the smoothed space, where activation channels are balanced, so it stands
for the layer's output error better than the raw weight error does.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm.auto import tqdm

from svdtune.errors import UserError
from svdtune.quant import formats as F
from svdtune.quant.config import SHRINK_GRID
from svdtune.quant.linear import SVDQuantLinear, pack_codes
from svdtune.quant.quantize import weight_matrix
from svdtune.quant.svdquant import low_rank
from svdtune.train.lora import SVDQuantLoraLayer, all_lora_layers, lora_layers

INITS = ("zero", "loftq", "loftq-requant")


@torch.no_grad()
def init_adapter(model: nn.Module, reference: nn.Module | None, adapter: str = "default", method: str = "loftq",
                 iters: int = 3) -> dict[str, float]:
    """Initialise `adapter` on every LoRA layer of `model` from the 16-bit `reference` denoiser
    (same architecture and module names). Returns each layer's relative error ||E'|| / ||W'||
    after the init (before it for "zero")."""
    if method not in INITS:
        raise UserError(f"adapter init {method!r} is not one of {', '.join(INITS)}")
    layers = lora_layers(model)
    if not all_lora_layers(model):
        raise UserError("the model has no LoRA layers (attach an adapter first)")
    # LoRA on 16-bit layers (lora.target_16bit) has no quantization error to start from: peft's zero init
    if reference is None:
        if method != "zero":
            raise UserError(f"init {method!r} needs the 16-bit model the backbone was quantized from")
        for layer in layers.values():
            layer.reset_lora_parameters(adapter, True)
        return {}
    errors = {}
    for name, layer in tqdm(layers.items(), desc=f"{method} init", unit="layer", mininterval=5):
        try:
            w = weight_matrix(reference.get_submodule(name))
        except AttributeError:
            raise UserError(f"the 16-bit reference has no layer {name!r}: is it the model that was quantized?") from None
        errors[name] = init_layer(layer, w, adapter, method, iters)
    return errors


def init_layer(layer: SVDQuantLoraLayer, w: torch.Tensor, adapter: str, method: str, iters: int = 3) -> float:
    base: SVDQuantLinear = layer.get_base_layer()
    lam = base.smooth.float().repeat(base.spec.positions)
    target = w.float() * lam - (base.up.float() @ (base.down.float() * lam) if base.spec.rank else 0)
    scale = target.norm().clamp_min(1e-12)
    error = target - base.residual_weight(torch.float32)
    if method == "zero":
        layer.reset_lora_parameters(adapter, True)
        return (error.norm() / scale).item()
    rank = layer.r[adapter]
    down, up = low_rank(error, rank)
    best = ((error - up @ down).norm() / scale).item()
    if method == "loftq-requant":
        s = base.spec
        for _ in range(iters):
            residual = F.quantize_weight(target - up @ down, s.weights, s.group_size, SHRINK_GRID)
            new_down, new_up = low_rank(target - F.dequantize(residual), rank)
            err = ((target - F.dequantize(residual) - new_up @ new_down).norm() / scale).item()
            if err >= best:
                break
            best, down, up = err, new_down, new_up
            base.qweight.copy_(pack_codes(residual.codes, s.weights))
            base.wscales.copy_(residual.scales)
            if residual.tensor_scale is not None:
                base.wtensor_scale.copy_(residual.tensor_scale)
    # LoRA reads unsmoothed x: A = down / lambda; B carries 1 / scaling so that B A * scaling = up down.
    # A rank above the layer's width gets fewer factors: the spare directions start as zero init
    # (A as peft drew it, B = 0), so they still train.
    a, b = layer.lora_A[adapter].weight, layer.lora_B[adapter].weight
    k = len(down)
    a[:k].copy_((down / lam).to(a.dtype))
    b.zero_()
    b[:, :k].copy_((up / layer.scaling[adapter]).to(b.dtype))
    return best
