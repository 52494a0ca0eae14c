"""The svdq layout: how one `SVDQuantLinear` is laid out for the fused kernels (FORMAT.md).

`pack_layer` turns a layer into its padded kernel tensors, `unpack_layer` turns them back into the
layer's own buffers: exactly, when the artifact's dtype is the layer's (otherwise the branch,
smoothing and bias are rounded to it).
"""

from __future__ import annotations

import math

import torch

from svdtune.quant import formats as F

TILE = 64           # K and N are padded to multiples of this (and K to whole groups)
RANK_MULTIPLE = 16  # the low-rank dimension is padded to a multiple of this
KEYS = ("qweight", "wscales", "wtensor_scale", "smooth", "proj_down", "proj_up", "bias", "act_clip")


def padded_sizes(spec) -> dict[str, int]:
    group = F.group_of(spec.in_channels, spec.group_size)
    k_pad = _round_up(spec.in_features, math.lcm(TILE, group))
    return {"k": k_pad, "n": _round_up(spec.out_channels, TILE), "rank": _round_up(spec.rank, RANK_MULTIPLE),
            "group": group}


def packed_shapes(spec) -> dict[str, tuple[int, ...]]:
    """The shape of every kernel tensor of a layer with this spec (FORMAT.md)."""
    p = padded_sizes(spec)
    shapes = {"qweight": (p["n"], p["k"] if spec.weights == "int8" else p["k"] // 2),
              "wscales": (p["n"], p["k"] // p["group"]),
              "smooth": (p["k"],) if spec.kernel_size is None else (spec.in_channels,),
              "proj_down": (p["k"], p["rank"]), "proj_up": (p["rank"], p["n"])}
    if spec.weights == "nvfp4":
        shapes["wtensor_scale"] = ()
    if spec.bias:
        shapes["bias"] = (p["n"],)
    if spec.act_clip:
        shapes["act_clip"] = (p["k"] // p["group"],) if spec.kernel_size is None else (spec.act_groups,)
    return shapes


def pack_layer(layer, dtype: torch.dtype = torch.bfloat16) -> dict[str, torch.Tensor]:
    """Kernel tensors of one layer (see FORMAT.md for shapes, padding and nibble order). The stored
    codes are padded as they are: a zero byte is two zero codes."""
    shape = packed_shapes(layer.spec)
    out = {
        "qweight": _pad(layer.qweight, shape["qweight"], 0),
        "wscales": _pad(layer.wscales, shape["wscales"], 0),
        "smooth": _pad(layer.smooth.to(dtype), shape["smooth"], 1),
        "proj_down": _pad(layer.down.T.to(dtype), shape["proj_down"], 0),
        "proj_up": _pad(layer.up.T.to(dtype), shape["proj_up"], 0),
    }
    if layer.wtensor_scale is not None:
        out["wtensor_scale"] = layer.wtensor_scale.float().reshape(())
    if layer.bias is not None:
        out["bias"] = _pad(layer.bias.to(dtype), shape["bias"], 0)
    if layer.act_clip is not None:  # fp32: a rounded clip would move every activation scale
        out["act_clip"] = _pad(layer.act_clip.float(), shape["act_clip"], 1)
    return out


def unpack_layer(tensors: dict[str, torch.Tensor], spec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The layer's buffers (`SVDQuantLinear.state_dict()` names) from its kernel tensors."""
    k, n, r, c = spec.in_features, spec.out_channels, spec.rank, spec.in_channels
    group = padded_sizes(spec)["group"]
    qweight = tensors["qweight"][:n, :k if spec.weights == "int8" else k // 2]
    out = {
        "qweight": qweight.contiguous(),
        "wscales": tensors["wscales"][:n, :k // group].contiguous(),
        "smooth": tensors["smooth"][:c].to(dtype),
        "down": tensors["proj_down"][:k, :r].T.to(dtype).contiguous(),
        "up": tensors["proj_up"][:r, :n].T.to(dtype).contiguous(),
    }
    if "wtensor_scale" in tensors:
        out["wtensor_scale"] = tensors["wtensor_scale"]
    if spec.bias:
        out["bias"] = tensors["bias"][:n].to(dtype)
    if spec.act_clip:
        out["act_clip"] = tensors["act_clip"][:spec.act_groups].float()
    return out


def _pad(t: torch.Tensor, shape: tuple[int, ...], value) -> torch.Tensor:
    if tuple(t.shape) == shape:
        return t.contiguous()
    out = t.new_zeros(shape)  # (new_full has no float8 kernel)
    if value:
        out.fill_(value)
    out[tuple(slice(0, d) for d in t.shape)] = t
    return out


def _round_up(x: int, multiple: int) -> int:
    return -(-x // multiple) * multiple
