"""Triton W4A4 layer (activation kernel + GEMM, branch and bias included) vs bf16 torch.matmul.

    python benchmarks/kernels_triton.py                    # on a CUDA GPU, FLUX.1 shapes
    TRITON_INTERPRET=1 python benchmarks/kernels_triton.py --shapes 64x128x96 --rounds 1   # CPU smoke run

Prints, per shape M x K x N: bf16 matmul time, W4A4 time (both kernels), the speed-up, and the
W4A4 output's SQNR against the reference kernel (random weights with realistic outliers).
"""

import argparse

import torch
from torch import nn

from svdtune.eval.cost import interleaved_best
from svdtune.quant import QuantConfig, set_backend
from svdtune.quant.linear import SVDQuantLinear
from svdtune.quant.metrics import sqnr_db
from svdtune.quant.svdquant import fit_layer

FLUX_SHAPES = ["4096x3072x3072", "4096x3072x12288", "4096x12288x3072"]


def layer_for(k: int, n: int, rank: int, device: str) -> tuple[SVDQuantLinear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    linear = nn.Linear(k, n)
    calib = torch.randn(512, k) * torch.where(torch.rand(k) < 0.02, 20.0, 1.0)
    cfg = QuantConfig(rank=rank, smooth_alphas=[0.5], shrink_grid=[1.0], lowrank_iters=1).resolved()
    fit = fit_layer(linear.weight.detach(), calib, calib.abs().amax(0), calib.min().item(), cfg)
    return SVDQuantLinear.from_float(linear, fit).to(device), linear.weight.detach(), calib


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="*", default=FLUX_SHAPES, help="MxKxN")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu (Triton interpreter)'}")
    print("| M x K x N | bf16 matmul (ms) | W4A4 Triton (ms) | speed-up | SQNR vs reference (dB) |\n|---|---:|---:|---:|---:|")
    for shape in args.shapes:
        m, k, n = map(int, shape.split("x"))
        layer, weight, calib = layer_for(k, n, args.rank, device)
        x = (torch.randn(m, k) * calib.abs().amax(0) / 4).to(device)
        xb, wb = x.bfloat16(), weight.to(device).bfloat16().T.contiguous()
        tri = set_backend(layer, "triton")
        with torch.no_grad():
            out = tri(xb).float()
            ref = set_backend(layer.cpu(), "reference")(x.cpu())
            set_backend(layer.to(device), "triton")

            def timed(fn):
                def run():
                    fn()
                    sync()
                return run

            times = interleaved_best({"bf16": timed(lambda: xb @ wb), "w4a4": timed(lambda: tri(xb))}, args.rounds)
        print(f"| {shape} | {1e3 * times['bf16']:.3f} | {1e3 * times['w4a4']:.3f} | "
              f"{times['bf16'] / times['w4a4']:.2f}x | {sqnr_db(ref, out.cpu()):.1f} |")


if __name__ == "__main__":
    main()
