"""Triton kernels for SVDQuant W4A4 linear layers (INT4, groups of 64 or any power of two >= 16).

1. `quantize_activations`: one pass over x (M, K) that computes the branch's down-projection
   x @ proj_down (unsmoothed x, fp32 accumulation), multiplies x by 1 / smoothing, quantizes each
   group of features per token to 4 bits (round half to even, like torch) with a bf16 scale, and
   packs two codes per byte (element 2i in the low nibble).
2. `w4a4_gemm`: packed 4-bit activations x packed 4-bit weights. Each K group is one int8 x int8
   -> int32 `tl.dot` (int8 tensor-core MMA on GPUs without 4-bit MMA, such as Hopper), rescaled
   into an fp32 accumulator by the activation and weight group scales; the epilogue adds the
   branch's up-projection (lora_act @ proj_up) and the bias and writes the output dtype.

Unsigned (post-GELU) activations are quantized as x / lambda + shift in 0..15; the shift's
contribution, shift @ W^T, is a constant per output channel folded into the bias at preparation.
Run on CPU tensors with TRITON_INTERPRET=1 (how the tests run them); natively on CUDA.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK_M_ACT = 32


@triton.jit
def _round_half_even(v):
    r = tl.floor(v + 0.5)
    odd = (r - 2.0 * tl.floor(r * 0.5)) != 0.0
    return tl.where(((r - v) == 0.5) & odd, r - 1.0, r)


@triton.jit
def _round_to_bf16(v):
    """fp32 -> nearest bf16 (ties to even), as fp32; by bits, since the interpreter's cast truncates."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _unpack(packed, ROWS: tl.constexpr, GROUP: tl.constexpr, SIGNED: tl.constexpr):
    """(ROWS, GROUP // 2) uint8 -> (ROWS, GROUP) int8 codes, low nibble first."""
    lo = (packed & 0xF).to(tl.int8)
    hi = (packed >> 4).to(tl.int8)
    if SIGNED:
        lo = tl.where(lo > 7, lo - 16, lo)
        hi = tl.where(hi > 7, hi - 16, hi)
    return tl.reshape(tl.join(lo, hi), (ROWS, GROUP))


@triton.jit
def _quantize_act_kernel(x_ptr, inv_smooth_ptr, shift_ptr, clip_ptr, down_ptr, q_ptr, s_ptr, lora_ptr,
                         M, K, stride_xm, KP_HALF, GROUPS, RP,
                         GROUP: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
                         HAS_LORA: tl.constexpr, UNSIGNED: tl.constexpr):
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.arange(0, GROUP)
    rk2 = tl.arange(0, GROUP // 2)
    rr = tl.arange(0, BLOCK_R)
    lora = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for g in range(0, GROUPS):
        k = g * GROUP + rk
        x = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K),
                    other=0.0).to(tl.float32)
        if HAS_LORA:
            d = tl.load(down_ptr + k[:, None] * RP + rr[None, :], mask=rr[None, :] < RP, other=0.0).to(tl.float32)
            lora += tl.dot(x, d, input_precision="ieee")
        xs = x * tl.load(inv_smooth_ptr + k)[None, :]
        if UNSIGNED:
            xs = tl.maximum(xs + tl.load(shift_ptr + k)[None, :], 0.0)
            qmax = 15.0
            qmin = 0.0
        else:
            qmax = 7.0
            qmin = -8.0
        scale = tl.maximum(tl.max(tl.abs(xs), axis=1) * tl.load(clip_ptr + g) / qmax, 1e-12)
        scale = _round_to_bf16(scale)  # the stored (bf16) scale is the one applied
        codes = tl.minimum(tl.maximum(_round_half_even(xs / scale[:, None]), qmin), qmax).to(tl.int8)
        lo, hi = tl.split(tl.reshape(codes, (BLOCK_M, GROUP // 2, 2)))
        packed = (lo.to(tl.uint8) & 0xF) | ((hi.to(tl.uint8) & 0xF) << 4)
        tl.store(q_ptr + rm[:, None] * KP_HALF + g * (GROUP // 2) + rk2[None, :], packed, mask=rm[:, None] < M)
        tl.store(s_ptr + rm * GROUPS + g, scale, mask=rm < M)
    if HAS_LORA:
        tl.store(lora_ptr + rm[:, None] * RP + rr[None, :], lora, mask=(rm[:, None] < M) & (rr[None, :] < RP))


def _gemm_configs():
    if INTERPRETED:  # the interpreter runs every config: one is enough
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in ((128, 128, 8, 3), (128, 64, 4, 4), (64, 128, 4, 4), (64, 64, 4, 4),
                                 (128, 256, 8, 3), (256, 128, 8, 3))]


@triton.autotune(configs=_gemm_configs(), key=["M", "N", "KP_HALF"])
@triton.jit
def _w4a4_gemm_kernel(qa_ptr, sa_ptr, qw_ptr, sw_ptr, lora_ptr, up_ptr, bias_ptr, out_ptr,
                      M, N, KP_HALF, GROUPS, RP, stride_om,
                      GROUP: tl.constexpr, BLOCK_R: tl.constexpr, HAS_LORA: tl.constexpr,
                      SIGNED_A: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rk2 = tl.arange(0, GROUP // 2)
    m_ok = rm < M
    n_ok = rn < N  # N is padded to the tile multiple in storage; rows past N are zero
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g in range(0, GROUPS):
        pa = tl.load(qa_ptr + rm[:, None] * KP_HALF + g * (GROUP // 2) + rk2[None, :], mask=m_ok[:, None], other=0)
        pw = tl.load(qw_ptr + rn[:, None] * KP_HALF + g * (GROUP // 2) + rk2[None, :], mask=n_ok[:, None], other=0)
        a = _unpack(pa, BLOCK_M, GROUP, SIGNED_A)
        w = _unpack(pw, BLOCK_N, GROUP, True)
        part = tl.dot(a, tl.trans(w), out_dtype=tl.int32)
        sa = tl.load(sa_ptr + rm * GROUPS + g, mask=m_ok, other=0.0)
        sw = tl.load(sw_ptr + rn * GROUPS + g, mask=n_ok, other=0.0)
        acc += part.to(tl.float32) * sa[:, None] * sw[None, :]
    if HAS_LORA:
        rr = tl.arange(0, BLOCK_R)
        la = tl.load(lora_ptr + rm[:, None] * RP + rr[None, :], mask=m_ok[:, None] & (rr[None, :] < RP), other=0.0)
        up = tl.load(up_ptr + rr[:, None] * N + rn[None, :], mask=(rr[:, None] < RP) & n_ok[None, :], other=0.0)
        acc += tl.dot(la, up, input_precision="ieee")
    acc += tl.load(bias_ptr + rn, mask=n_ok, other=0.0)[None, :]
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def _block_r(rank_padded: int) -> int:
    return triton.next_power_of_2(max(rank_padded, 16))  # tl.arange needs a power of two


def quantize_activations(x: torch.Tensor, plan, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x (M, K), clip (groups,) fp32 -> packed codes (M, Kp / 2) uint8, scales (M, groups) fp32,
    lora_act (M, Rp) fp32."""
    m = x.shape[0]
    kp, groups, rp = plan.k_padded, plan.groups, plan.rank_padded
    q = torch.empty(m, kp // 2, dtype=torch.uint8, device=x.device)
    s = torch.empty(m, groups, dtype=torch.float32, device=x.device)
    lora = torch.empty(m, max(rp, 1), dtype=torch.float32, device=x.device)
    _quantize_act_kernel[(triton.cdiv(m, BLOCK_M_ACT),)](
        x, plan.inv_smooth, plan.shift, clip, plan.proj_down, q, s, lora, m, x.shape[1], x.stride(0), kp // 2, groups,
        max(rp, 1), GROUP=plan.group, BLOCK_M=BLOCK_M_ACT, BLOCK_R=_block_r(rp), HAS_LORA=rp > 0,
        UNSIGNED=plan.unsigned)
    return q, s, lora if rp else None


def w4a4_gemm(q: torch.Tensor, s: torch.Tensor, lora: torch.Tensor | None, plan, out_dtype: torch.dtype) -> torch.Tensor:
    m, n = q.shape[0], plan.out_features
    out = torch.empty(m, n, dtype=out_dtype, device=q.device)
    rp = plan.rank_padded

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"])

    _w4a4_gemm_kernel[grid](
        q, s, plan.qweight, plan.wscales, lora if lora is not None else s, plan.proj_up, plan.bias, out,
        m, n, plan.k_padded // 2, plan.groups, max(rp, 1), out.stride(0),
        GROUP=plan.group, BLOCK_R=_block_r(rp), HAS_LORA=rp > 0, SIGNED_A=not plan.unsigned)
    return out
