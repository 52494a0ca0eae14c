"""CPU kernels for SVDQuant layers: one layer, a DiT of realistic width, and the reference models.

    .venv/bin/python benchmarks/kernels_cpu.py [--rounds 5] [--dit-layers 4] [--prompts 16]

Tables (times: best of --rounds, methods interleaved in one process):
1. One linear layer, M = 1024 tokens, rank 32: fp32 / bf16 nn.Linear vs the cpu-fast and cpu-exact
   kernels, with each output's SQNR against the fp32 layer.
2. One denoising step (CFG batch 2) of a PixArt-Sigma-layout DiT (hidden 1152, 16 heads, random
   weights, --dit-layers blocks) at 1024 image tokens (4-bit layers with the rest of the model in
   fp32, or in bf16), and the svdq artifact's size against the 16-bit denoiser, at that depth and
   at PixArt-Sigma's 28 blocks.
3. The reference models: step time per backend, and image PSNR of cpu-fast against cpu-exact
   (the CPU default is cpu-fast only if this is >= 30 dB) and of each against the 16-bit model.
"""

import argparse
import copy
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from svdtune.eval.cost import interleaved_best  # noqa: E402
from svdtune.eval.world_bench import prompt_suite  # noqa: E402
from svdtune.generate import generate_images  # noqa: E402
from svdtune.pipelines import load_pipeline  # noqa: E402
from svdtune.quant import QuantConfig, quantize, set_backend  # noqa: E402
from svdtune.quant.config import CalibrationConfig  # noqa: E402
from svdtune.quant.metrics import sqnr_db  # noqa: E402
from svdtune.quant.quantize import denoiser_of, plan  # noqa: E402
from svdtune.kernels.artifact import save_svdq  # noqa: E402
from svdtune.quant.svdquant import fit_layer  # noqa: E402
from svdtune.eval.metrics import psnr  # noqa: E402

KERNELS = ("cpu-fast", "cpu-exact")


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def speed_rows(times: dict[str, float], baselines=("fp32", "bf16"), extra=None) -> list[list]:
    return [[name, f"{1e3 * t:.2f}", *(f"{times[b] / t:.2f}x" for b in baselines), *((extra or {}).get(name, []))]
            for name, t in times.items()]


# ---------------------------------------------------------------- 1. one layer

def layer_table(k: int, n: int, m: int, rank: int, rounds: int) -> str:
    from svdtune.quant.linear import SVDQuantLinear

    torch.manual_seed(0)
    linear = nn.Linear(k, n)
    # Activations with a few outlier channels, as diffusion models have.
    x = torch.randn(m, k) * torch.where(torch.rand(k) < 0.02, 20.0, 1.0)
    cfg = QuantConfig(rank=rank, smooth_alphas=[0.3, 0.5, 0.7], shrink_grid=[1.0, 0.9], lowrank_iters=2).resolved()
    fit = fit_layer(linear.weight.detach(), x[:256], x.abs().amax(0), x.min().item(), cfg)
    layer = SVDQuantLinear.from_float(linear, fit)
    kernels = {b: set_backend(copy.deepcopy(layer), b) for b in KERNELS}
    bf16, xb = copy.deepcopy(linear).bfloat16(), x.bfloat16()
    fns = {"fp32 nn.Linear": lambda: linear(x), "bf16 nn.Linear": lambda: bf16(xb)}
    fns |= {f"W4A4 {b}": (lambda lay=lay: lay(x)) for b, lay in kernels.items()}
    with torch.no_grad():
        times = interleaved_best(fns, rounds)
        ref = linear(x)
        acc = {name: [f"{sqnr_db(ref, fn().float()):.1f}"] for name, fn in fns.items()}
    rows = speed_rows(times, ("fp32 nn.Linear", "bf16 nn.Linear"), acc)
    return f"\nOne layer, M={m} tokens, K={k}, N={n}, rank {rank}\n" + table(
        ["method", "ms", "vs fp32", "vs bf16", "SQNR vs fp32 (dB)"], rows)


# ---------------------------------------------------------------- 2. a DiT of realistic width

def pixart_layout(layers: int):
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel(
        sample_size=64, patch_size=2, in_channels=4, out_channels=8, num_layers=layers, num_attention_heads=16,
        attention_head_dim=72, cross_attention_dim=1152, caption_channels=4096, norm_type="ada_norm_single",
        use_additional_conditions=False, interpolation_scale=2).eval()

    def inputs(dtype):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 4, 64, 64, generator=g).to(dtype),
                    encoder_hidden_states=torch.randn(2, 120, 4096, generator=g).to(dtype),
                    timestep=torch.tensor([500, 500]), added_cond_kwargs={"resolution": None, "aspect_ratio": None})

    return model, inputs


@torch.no_grad()
def fill_random(model: nn.Module, seed: int = 0) -> None:
    """Random codes, scales and branch in every quantized shell (timing needs shapes, not values)."""
    from svdtune.quant.linear import SVDQuantLinear

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, SVDQuantLinear):
            m.qweight.copy_(torch.randint(0, 256, m.qweight.shape, generator=g, dtype=torch.uint8))
            m.wscales.copy_((torch.rand(m.wscales.shape, generator=g) * 0.01 + 1e-3).to(m.wscales.dtype))
            m.down.copy_(torch.randn(m.down.shape, generator=g) * 0.02)
            m.up.copy_(torch.randn(m.up.shape, generator=g) * 0.02)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dit_table(layers: int, rounds: int) -> str:
    model, inputs = pixart_layout(layers)
    bf16 = copy.deepcopy(model).bfloat16()
    quant = plan(copy.deepcopy(model), QuantConfig())
    fill_random(quant)
    kernels = {b: set_backend(copy.deepcopy(quant), b) for b in KERNELS}
    quant_bf16 = set_backend(copy.deepcopy(quant).bfloat16(), "cpu-fast")  # 4-bit layers, bf16 elsewhere
    x32, x16 = inputs(torch.float32), inputs(torch.bfloat16)
    fns = {"fp32": lambda: model(**x32), "bf16": lambda: bf16(**x16)}
    fns |= {f"W4A4 {b}": (lambda q=q: q(**x32)) for b, q in kernels.items()}
    fns["W4A4 cpu-fast, bf16 elsewhere"] = lambda: quant_bf16(**x16)
    with torch.no_grad():
        times = interleaved_best(fns, rounds, warmup=1)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (f"\nOne denoising step (batch 2, 1024 image tokens, 120 text tokens) of a PixArt-Sigma-layout DiT, "
            f"hidden 1152, {layers} blocks, {params:.0f} M parameters, random weights\n"
            + table(["method", "ms", "vs fp32", "vs bf16"], speed_rows(times)))


def artifact_size(layers: int) -> str:
    """The svdq artifact against the 16-bit denoiser. The 16-bit layers every DiT keeps (adaLN
    modulation, caption projection: about 28 M parameters here) weigh less the deeper the model."""
    from safetensors.torch import save_file

    model, _ = pixart_layout(layers)
    quant = plan(copy.deepcopy(model), QuantConfig())
    fill_random(quant)
    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.bfloat16().contiguous() for k, v in model.state_dict().items()}, f"{tmp}/bf16.safetensors")
        fp16_bytes = Path(f"{tmp}/bf16.safetensors").stat().st_size
        quant_bytes = folder_bytes(save_svdq(quant.bfloat16(), f"{tmp}/w4a4"))
    return (f"svdq artifact (bf16) of the {layers}-block layout: {quant_bytes / 2**20:.1f} MiB vs "
            f"{fp16_bytes / 2**20:.1f} MiB for the 16-bit denoiser = {quant_bytes / fp16_bytes:.3f}x")


# ---------------------------------------------------------------- 3. the reference models

def reference_table(model_name: str, n_prompts: int, rounds: int) -> str:
    pipe = load_pipeline(model_name)
    prompts = [s.detailed_caption() for s in prompt_suite("single", n_prompts)]
    images = {"16-bit": generate_images(pipe, prompts, 20, 4.0, seed=0)[0]}
    full = copy.deepcopy(denoiser_of(pipe))
    bf16 = copy.deepcopy(full).bfloat16()
    quantize(pipe, QuantConfig(calibration=CalibrationConfig(prompts=32, steps=20, guidance=4.0, batch_size=32)))
    denoiser = denoiser_of(pipe)
    args, kwargs = denoiser_call(pipe)
    args16, kwargs16 = _bf16((args, kwargs))
    fns = {"fp32": lambda: full(*args, **kwargs), "bf16": lambda: bf16(*args16, **kwargs16)}
    for b in KERNELS:
        fns[f"W4A4 {b}"] = lambda b=b: set_backend(denoiser, b)(*args, **kwargs)
    with torch.no_grad():
        times = interleaved_best(fns, rounds)
    for b in KERNELS:
        set_backend(denoiser, b)
        images[b] = generate_images(pipe, prompts, 20, 4.0, seed=0)[0]
    quality = {f"W4A4 {b}": [f"{psnr(images[b], images['16-bit']).mean():.1f}",
                             f"{psnr(images['cpu-fast'], images['cpu-exact']).mean():.1f}" if b == "cpu-fast" else "-"]
               for b in KERNELS}
    return (f"\n{model_name}: one denoiser call (CFG batch 2); {n_prompts} images, 20 steps, guidance 4\n"
            + table(["method", "ms", "vs fp32", "vs bf16", "image PSNR vs 16-bit (dB)", "vs cpu-exact (dB)"],
                    speed_rows(times, extra=quality)))


class _Captured(Exception):
    pass


def denoiser_call(pipe) -> tuple[tuple, dict]:
    """The arguments of the denoiser's first call in a real generation (CFG batch 2)."""
    captured = []

    def hook(module, args, kwargs):
        captured.append((args, kwargs))
        raise _Captured

    handle = denoiser_of(pipe).register_forward_pre_hook(hook, with_kwargs=True)
    try:
        generate_images(pipe, ["a red circle"], 2, 4.0, seed=0)
    except _Captured:
        pass
    finally:
        handle.remove()
    return captured[0]


def _bf16(tree):
    if torch.is_tensor(tree):
        return tree.bfloat16() if tree.is_floating_point() else tree
    if isinstance(tree, (tuple, list)):
        return type(tree)(_bf16(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _bf16(v) for k, v in tree.items()}
    return tree


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dit-layers", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--models", nargs="*", default=["ref-unet", "ref-dit"])
    ap.add_argument("--skip", nargs="*", default=[], choices=["layer", "dit", "reference"])
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if "layer" not in args.skip:
        for kn in (1024, 3072):
            print(layer_table(kn, kn, 1024, 32, args.rounds))
    if "dit" not in args.skip:
        print(dit_table(args.dit_layers, args.rounds))
        for layers in sorted({args.dit_layers, 28}):  # 28: PixArt-Sigma's own depth
            print(artifact_size(layers))
    if "reference" not in args.skip:
        for name in args.models:
            print(reference_table(name, args.prompts, args.rounds))


if __name__ == "__main__":
    main()
