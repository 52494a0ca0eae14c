"""Triton W4A4 backend: per-layer preparation from the svdq layout, and the forward (w4a4.py)."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class TritonPlan:
    qweight: torch.Tensor      # (Np, Kp / 2) uint8, svdq layout
    wscales: torch.Tensor      # (Np, groups) fp32
    inv_smooth: torch.Tensor   # (Kp,) fp32, 1 on padding
    shift: torch.Tensor        # (Kp,) fp32, unsigned activations' shift on x / lambda (else 0)
    proj_down: torch.Tensor    # (Kp, Rp) fp32
    proj_up: torch.Tensor      # (Rp, N) fp32
    bias: torch.Tensor         # (N,) fp32, minus the shift's contribution
    no_clip: torch.Tensor      # (groups,) fp32 ones: the activation clip of a call without one
    k_padded: int
    groups: int
    group: int
    rank_padded: int
    in_features: int
    out_features: int
    unsigned: bool


def supports(layer) -> bool:
    """INT4 linear layers whose group is a power of two of at least 16 (the kernels' tl.arange over a
    group, and tl.dot's smallest K); the dispatcher runs the others on the exact path."""
    from svdtune.quant.formats import group_of

    s = layer.spec
    group = group_of(s.in_channels, s.group_size)
    return (s.kernel_size is None and s.weights == "int4" and s.activations in ("int4", "uint4")
            and group >= 16 and group & (group - 1) == 0)


@torch.no_grad()
def prepare(layer) -> TritonPlan:
    from svdtune.kernels.format import pack_layer, padded_sizes

    s, p = layer.spec, padded_sizes(layer.spec)
    groups = p["k"] // p["group"]
    t = pack_layer(layer, torch.float32)
    n = s.out_channels
    shift = torch.zeros(p["k"], device=t["smooth"].device)
    bias = t["bias"][:n].clone() if "bias" in t else torch.zeros(n, device=shift.device)
    if s.act_shift:
        shift[:s.in_features] = layer._shift().float()
        bias -= shift[:s.in_features] @ layer.residual_weight(torch.float32).T
    return TritonPlan(
        qweight=t["qweight"], wscales=t["wscales"].float().contiguous(), inv_smooth=(1 / t["smooth"]).contiguous(),
        shift=shift, proj_down=t["proj_down"], proj_up=t["proj_up"][:, :n].contiguous(), bias=bias,
        no_clip=torch.ones(groups, device=shift.device),
        k_padded=p["k"], groups=groups, group=p["group"], rank_padded=p["rank"] if s.rank else 0,
        in_features=s.in_features, out_features=n, unsigned=s.activations == "uint4")


def forward(plan: TritonPlan, x: torch.Tensor, act_clip: torch.Tensor | None = None) -> torch.Tensor:
    from svdtune.kernels.triton.w4a4 import quantize_activations, w4a4_gemm

    rows = x.reshape(-1, plan.in_features).contiguous()
    clip = plan.no_clip
    if act_clip is not None:  # padding groups hold zeros: any clip will do there
        clip = torch.cat([act_clip.float(), plan.no_clip[act_clip.numel():]])
    q, scales, lora = quantize_activations(rows, plan, clip)
    return w4a4_gemm(q, scales, lora, plan, x.dtype).reshape(*x.shape[:-1], plan.out_features)
