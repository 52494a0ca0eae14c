"""CPU kernels for SVDQuant layers: one layer, a DiT of realistic width, and the reference models.

    .venv/bin/python benchmarks/kernels_cpu.py [--rounds 5] [--dit-layout pixart|flux] [--dit-layers 4] [--prompts 16]

Tables (times: best of --rounds, methods interleaved in one process):
1. One linear layer, M = 1024 tokens, rank 32: fp32 / bf16 nn.Linear vs the cpu-fast and cpu-exact
   kernels, with each output's SQNR against the fp32 layer.
2. One denoising step at 1024 image tokens of a DiT of realistic width with random weights (4-bit
   layers with the rest of the model in fp32, or in bf16), and the svdq artifact's size on disk
   against the 16-bit denoiser's, plus the size at the model's full depth (dry run):
     pixart  PixArt-Sigma's layout (hidden 1152), --dit-layers blocks, CFG batch 2, 120 text tokens
     flux    FLUX.1-dev's layout (hidden 3072), --dit-layers double and twice as many single blocks,
             batch 1 (guidance-distilled), 512 text tokens; AdaLN modulation in W4A16 as in
             configs/quant/flux-dev.yaml (--dit-layers 3: 1.9 B parameters, about 20 GB of RAM)
3. The reference models: step time per backend, and image PSNR of cpu-fast against cpu-exact
   (the CPU default is cpu-fast only if this is >= 30 dB) and of each against the 16-bit model.
"""

import argparse
import contextlib
import copy
import json
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
from svdtune.quant.config import ADALN_W4A16, CalibrationConfig  # noqa: E402
from svdtune.quant.metrics import sqnr_db  # noqa: E402
from svdtune.quant.job import planned_model  # noqa: E402
from svdtune.quant.quantize import denoiser_of, plan, size_summary  # noqa: E402
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
    """(model, inputs(dtype), quant config, architecture file of the full-depth model)."""
    from diffusers import PixArtTransformer2DModel

    arch = Path("configs/quant/architectures/pixart-sigma-xl.json")
    model = PixArtTransformer2DModel(
        sample_size=64, patch_size=2, in_channels=4, out_channels=8, num_layers=layers, num_attention_heads=16,
        attention_head_dim=72, cross_attention_dim=1152, caption_channels=4096, norm_type="ada_norm_single",
        use_additional_conditions=False, interpolation_scale=2).eval()

    def inputs(dtype):
        g = torch.Generator().manual_seed(0)
        return dict(hidden_states=torch.randn(2, 4, 64, 64, generator=g).to(dtype),
                    encoder_hidden_states=torch.randn(2, 120, 4096, generator=g).to(dtype),
                    timestep=torch.tensor([500, 500]), added_cond_kwargs={"resolution": None, "aspect_ratio": None})

    return model, inputs, QuantConfig(), arch


def flux_layout(layers: int):
    from diffusers import FluxTransformer2DModel

    arch = Path("configs/quant/architectures/flux1-dev.json")
    config = json.loads(arch.read_text()) | {"num_layers": layers, "num_single_layers": 2 * layers}
    model = FluxTransformer2DModel.from_config(config).eval()

    def inputs(dtype):
        g = torch.Generator().manual_seed(0)
        rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        img_ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(-1, 3)
        return dict(hidden_states=torch.randn(1, 1024, 64, generator=g).to(dtype),
                    encoder_hidden_states=torch.randn(1, 512, 4096, generator=g).to(dtype),
                    pooled_projections=torch.randn(1, 768, generator=g).to(dtype),
                    timestep=torch.tensor([0.5]).to(dtype), guidance=torch.tensor([3.5]).to(dtype),
                    img_ids=img_ids, txt_ids=torch.zeros(512, 3))

    return model, inputs, QuantConfig(weight_only=list(ADALN_W4A16)), arch


LAYOUTS = {"pixart": pixart_layout, "flux": flux_layout}


@torch.no_grad()
def fill_random(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random codes, scales and branch in every quantized shell (timing needs shapes, not values)."""
    from svdtune.quant.linear import SVDQuantLinear

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, SVDQuantLinear):
            m.qweight.copy_(torch.randint(0, 256, m.qweight.shape, generator=g, dtype=torch.uint8))
            m.wscales.copy_((torch.rand(m.wscales.shape, generator=g) * 0.01 + 1e-3).to(m.wscales.dtype))
            m.down.copy_(torch.randn(m.down.shape, generator=g) * 0.02)
            m.up.copy_(torch.randn(m.up.shape, generator=g) * 0.02)
    return model


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def dit_table(layout: str, layers: int, rounds: int) -> str:
    """Each variant is built afresh (random weights: timing needs shapes, not values), the 16-bit
    ones directly in bf16, so that no second fp32 model is ever alive beside the fp32 one."""
    build = LAYOUTS[layout]
    model, inputs, cfg, arch = build(layers)
    with default_dtype(torch.bfloat16):
        bf16 = build(layers)[0]
        quant_bf16 = set_backend(fill_random(plan(build(layers)[0], cfg)), "cpu-fast")  # bf16 outside the 4-bit layers
    # cpu-exact keeps every residual dequantized in fp32: at FLUX's width that would not fit beside the rest.
    kernels = {b: set_backend(copy.deepcopy(quant_bf16).float(), b)
               for b in (KERNELS if layout == "pixart" else ("cpu-fast",))}
    x32, x16 = inputs(torch.float32), inputs(torch.bfloat16)
    fns = {"fp32": lambda: model(**x32), "bf16": lambda: bf16(**x16)}
    fns |= {f"W4A4 {b}": (lambda q=q: q(**x32)) for b, q in kernels.items()}
    fns["W4A4 cpu-fast, bf16 elsewhere"] = lambda: quant_bf16(**x16)
    with torch.no_grad():
        times = interleaved_best(fns, rounds, warmup=1)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    shape = ", ".join(f"{k}={v}" for k, v in model.config.items() if k in ("num_layers", "num_single_layers"))
    del fns, model, kernels  # the artifact's writer needs the memory
    return (f"\nOne denoising step (batch {x32['hidden_states'].shape[0]}, 1024 image tokens, "
            f"{x32['encoder_hidden_states'].shape[1]} text tokens) of a {layout} layout DiT ({shape}), "
            f"{params:.0f} M parameters, random weights\n"
            + table(["method", "ms", "vs fp32", "vs bf16"], speed_rows(times)) + "\n"
            + artifact_size(bf16, quant_bf16, cfg, arch))


def artifact_size(bf16: nn.Module, quant_bf16: nn.Module, cfg: QuantConfig, arch: Path) -> str:
    """The svdq artifact (bf16) on disk against the 16-bit denoiser's safetensors, and the same
    sizes at the full depth of `arch` (a dry run on the meta device: bytes as stored, unpadded).
    The 16-bit layers every DiT keeps (embedders, caption projection) weigh less the deeper it is."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.contiguous() for k, v in bf16.state_dict().items()}, f"{tmp}/bf16.safetensors")
        fp16_bytes = Path(f"{tmp}/bf16.safetensors").stat().st_size
        quant_bytes = folder_bytes(save_svdq(quant_bf16, f"{tmp}/w4a4"))
    full = size_summary(planned_model(arch, cfg))
    full_ratio = full["denoiser_quantized_bytes"] / full["denoiser_fp16_bytes"]
    return (f"svdq artifact on disk: {quant_bytes / 2**20:.1f} MiB vs {fp16_bytes / 2**20:.1f} MiB for the 16-bit "
            f"denoiser = {quant_bytes / fp16_bytes:.3f}x; at full depth ({arch.name}, dry run): "
            f"{full['denoiser_quantized_bytes'] / 2**30:.2f} GiB vs {full['denoiser_fp16_bytes'] / 2**30:.2f} GiB "
            f"= {full_ratio:.3f}x (quantized layers {full['layers_ratio']:.3f}x)")


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
    ap.add_argument("--dit-layout", choices=LAYOUTS, default="pixart")
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
        print(dit_table(args.dit_layout, args.dit_layers, args.rounds))
    if "reference" not in args.skip:
        for name in args.models:
            print(reference_table(name, args.prompts, args.rounds))


if __name__ == "__main__":
    main()
