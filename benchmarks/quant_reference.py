"""SVDQuant and its baselines end to end on the reference models (the SVDQuant paper's protocol).

    .venv/bin/python benchmarks/quant_reference.py [--n 64] [--steps 20] [--models ref-unet ref-dit] [--ablations]
        [--only "W4A4 SVDQuant r32" "W4A4 SVDQuant r32 + GPTQ"]

The same prompts and seeds go through the 16-bit model and every quantized one. Per method:
PSNR and LPIPS of the quantized images against the 16-bit images, evaluator alignment (% all-correct,
colour, shape), Fréchet distance of evaluator features to rendered scenes of the same prompts,
the quantized layers' size against 16-bit, the checkpoint on disk, quantization wall time and
peak memory. Calibration statistics are collected once per model and shared by every method.
--ablations adds rank 0/8/16/32/64, smoothing off, 1 low-rank iteration and NVFP4 on ref-dit.
"""

import argparse
import copy
import tempfile
from pathlib import Path

from svdtune.eval.cost import measure
from svdtune.eval.frechet import frechet_distance
from svdtune.eval.world_bench import alignment, evaluator_features, prompt_suite, render_scenes
from svdtune.generate import generate_images
from svdtune.pipelines import load_evaluator, load_pipeline, with_denoiser
from svdtune.quant.config import QuantConfig
from svdtune.quant.quantize import collect_statistics, denoiser_of, quantize, size_summary
from svdtune.quant.serialize import WEIGHTS, save_quantized
from svdtune.eval.metrics import lpips, psnr

METHODS = {
    "W4A4 naive (RTN)": QuantConfig(method="rtn"),
    "W4A4 SmoothQuant": QuantConfig(method="smoothquant"),
    "W4A4 SVDQuant r32": QuantConfig(method="svdquant"),
    "W4A4 SVDQuant r32 + GPTQ": QuantConfig(method="svdquant", gptq=True),
    "W8A8": QuantConfig(method="w8a8"),
    "W4A16 NF4": QuantConfig(method="nf4"),
}
# UNets only: their 3x3 convolutions hold most of the weights and stay 16-bit by default
UNET_METHODS = {
    "W4A4 naive (RTN), 3x3 convs too": QuantConfig(method="rtn", conv3x3=True),
    "W4A4 SVDQuant r32, 3x3 convs too": QuantConfig(method="svdquant", conv3x3=True),
    # the resnet convolutions read SiLU outputs, unsigned with a shift by default
    "W4A4 SVDQuant r32, 3x3 convs too, signed acts": QuantConfig(method="svdquant", conv3x3=True, unsigned_acts=False),
}
ABLATIONS = {
    **{f"SVDQuant rank {r}": QuantConfig(rank=r, method="svdquant" if r else "smoothquant") for r in (0, 8, 16, 32, 64)},
    "SVDQuant r32, no smoothing": QuantConfig(smooth=False),
    "SVDQuant r32, 1 low-rank iteration": QuantConfig(lowrank_iters=1),
    "SVDQuant r32, NVFP4 g16": QuantConfig(weights="nvfp4", activations="nvfp4", group_size=16),
}


def evaluate(model_name, methods, args, evaluator):
    pipe = load_pipeline(model_name)
    scenes = prompt_suite("single", args.n // 2) + prompt_suite("two", args.n - args.n // 2)
    prompts = [s.detailed_caption() for s in scenes]
    real = evaluator_features(evaluator, render_scenes(scenes))
    run = lambda p: generate_images(p, prompts, args.steps, args.guidance, seed=0, batch_size=32)[0]  # noqa: E731
    reference = run(pipe)
    original = denoiser_of(pipe)
    calibrations = {}  # one calibration per kind (with 3x3 convolutions when some method quantizes them;
    for gptq in sorted({m.gptq for m in methods.values()}):  # with GPTQ's Hessians for GPTQ)
        with measure() as cal_cost:
            stats = collect_statistics(pipe, QuantConfig(conv3x3=any(m.conv3x3 for m in methods.values()), gptq=gptq))
        calibrations[gptq] = stats, cal_cost
    rows = [dict(method="16-bit", psnr=float("inf"), lpips=0.0, **_quality(evaluator, reference, prompts, real),
                 layers_ratio=1.0, disk_mib=_denoiser_mib(model_name), seconds=0.0, peak_mib=0.0, added_mib=0.0)]
    for name, cfg in methods.items():
        stats, cal_cost = calibrations[cfg.gptq]
        quantized = copy.deepcopy(original)
        with measure() as cost:
            quantize(quantized, cfg, calibration=stats)
        with with_denoiser(pipe, quantized):
            images = run(pipe)
        with tempfile.TemporaryDirectory() as tmp:
            save_quantized(quantized.half(), tmp)
            disk = (Path(tmp) / WEIGHTS).stat().st_size / 2**20
        rows.append(dict(method=name, psnr=psnr(images, reference).mean().item(),
                         lpips=lpips(images, reference).mean().item(), **_quality(evaluator, images, prompts, real),
                         layers_ratio=size_summary(quantized)["layers_ratio"], disk_mib=disk,
                         seconds=cal_cost.seconds + cost.seconds, peak_mib=max(cal_cost.peak_mib, cost.peak_mib),
                         added_mib=cost.added_mib))
        print(f"[{model_name} {name}: done]", flush=True)
    return rows


def _quality(evaluator, images, prompts, real) -> dict:
    a = alignment(evaluator, images, prompts)
    return dict(all=a["all"], colour=a["colour"], shape=a["shape"],
                fd=frechet_distance(evaluator_features(evaluator, images), real))


def _denoiser_mib(model_name) -> float:
    from svdtune.pipelines import resolve_model

    folder = Path(resolve_model(model_name))
    sub = "unet" if (folder / "unet").is_dir() else "transformer"
    return sum(f.stat().st_size for f in (folder / sub).glob("*.safetensors")) / 2**20


def print_table(title, rows):
    print(f"\n{title}")
    print("| method | PSNR vs 16-bit (dB) | LPIPS vs 16-bit | all-correct % | colour % | shape % | FD to rendered | "
          "quantized layers vs 16-bit | denoiser on disk (MiB) | calibrate + quantize (s) | peak RSS (MiB) | "
          "added by quantizing (MiB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['psnr']:.2f} | {r['lpips']:.4f} | {r['all']:.1f} | {r['colour']:.1f} | {r['shape']:.1f} | "
              f"{r['fd']:.2f} | {r['layers_ratio']:.3f}x | {r['disk_mib']:.2f} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | "
              f"{r['added_mib']:.0f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64, help="prompts (half single-object, half two-object)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--models", nargs="*", default=["ref-unet", "ref-dit"])
    ap.add_argument("--ablations", action="store_true")
    ap.add_argument("--evaluator", default=None, help="world evaluator folder (default: the shipped one)")
    ap.add_argument("--only", nargs="*", help="run only these methods (their names as printed)")
    args = ap.parse_args()
    evaluator = load_evaluator(args.evaluator)
    for model in args.models:
        methods = METHODS | (UNET_METHODS if "unet" in model else {})
        methods = {k: v for k, v in methods.items() if not args.only or k in args.only}
        print_table(f"{model}: {args.n} prompts, {args.steps} steps, guidance {args.guidance}",
                    evaluate(model, methods, args, evaluator))
    if args.ablations:
        print_table(f"Ablations on ref-dit ({args.n} prompts)", evaluate("ref-dit", ABLATIONS, args, evaluator))


if __name__ == "__main__":
    main()
