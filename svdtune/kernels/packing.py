"""Two 4-bit codes per byte along the last dimension (element 2i in the low nibble, 2i+1 in the high).

This is the storage format every backend reads: the pure-torch reference, the Triton kernels and the
CPU int8 path. Signed formats (int4) store two's-complement nibbles; unsigned ones (uint4, nvfp4
sign-magnitude codes, nf4 indices) store 0..15.
"""

from __future__ import annotations

import torch


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """int8 codes in [-8, 15] of shape (..., K), K even -> uint8 (..., K // 2)."""
    if codes.shape[-1] % 2:
        raise ValueError(f"cannot pack an odd last dimension ({codes.shape[-1]}) into nibbles")
    nib = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return nib[..., 0::2] | (nib[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, signed: bool) -> torch.Tensor:
    """uint8 (..., K // 2) -> int8 codes (..., K); `signed` sign-extends two's-complement nibbles."""
    lo, hi = packed & 0xF, packed >> 4
    codes = torch.stack((lo, hi), dim=-1).flatten(-2).to(torch.int8)
    return torch.where(codes > 7, codes - 16, codes) if signed else codes
