"""Training cost at realistic width: LoRA on the SVDQuant W4A4 backbone vs LoRA on the 16-bit one.

    .venv/bin/python benchmarks/train_cost.py [--layers 4] [--batch 2] [--rounds 5] [--dtype float32]

The memory ratio depends on depth: what does not grow with the blocks (the torch runtime's first-step
buffers, the embeddings and final layer, one block's recomputed activations) is a larger share of a
4-block model's peak than of a real backbone's (SD3-medium 24 blocks, FLUX.1 57); the README gives
4 and 12.

An SD3-style DiT with hidden size 1024 (16 heads x 64), random weights, 256 image + 77 text
tokens. Both students carry the same rank-16 LoRA on the same projections and train with AdamW.
Step time (forward, backward, optimizer step) is measured in one process, the two models
interleaved, median of each round's steps, best round reported. Peak memory is measured in a fresh
process per variant: the peak resident set (VmHWM, reset once the model is built) during the
training steps, and the same above the process's resident set before the model existed (what
training adds to a bare interpreter with torch imported). The W4A4 backbones are quantized once, in
this process, and saved; each student loads its backbone from that folder, as the trainer does
(`train.quantized`, or `backbone/` after the first run): quantizing in the measured process would
count what the fit leaves resident (LAPACK workspaces, a fragmented heap; +25 MiB at 4 blocks,
bf16) as training memory. The children fix glibc's mmap threshold
at 64 KiB: its adaptive threshold otherwise keeps the memory of freed tensors (the 16-bit layers
that quantization replaced) resident in a fragmented heap, which measures the allocator, not what
training holds (0.97x instead of 0.68x in fp32 here). Gradient checkpointing is on by default
(as in QLoRA-style training, where the frozen backbone is what memory is spent on).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import SD3Transformer2DModel  # before the children's baseline: module code is not training memory
from peft import LoraConfig, inject_adapter_in_model

from svdtune.quant.calibrate import Recording
from svdtune.quant.config import ADALN_W4A16, QuantConfig
from svdtune.quant.quantize import quantize, select_layers
from svdtune.quant.serialize import load_quantized, save_quantized
from svdtune.train.lora import DEFAULT_TARGET, attach, lora_config, trainable_parameters

HIDDEN, HEADS, TEXT_TOKENS = 1024, 16, 77
# The AdaLN modulation (a third of an MMDiT's weights) stays 16-bit in "w4a4", 4-bit weight-only in
# the last (`QuantConfig.weight_only`, as the FLUX configs and nunchaku do).
KINDS = ("16-bit", "w4a4", "w4a4 + AdaLN w4a16")
FAST_FIT = dict(smooth_alphas=[0.5], shrink_grid=[1.0], lowrank_iters=1)  # fit quality is not timed here


def build_dit(layers: int):
    torch.manual_seed(0)
    return SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, out_channels=16, num_layers=layers,
                                 attention_head_dim=HIDDEN // HEADS, num_attention_heads=HEADS,
                                 joint_attention_dim=HIDDEN, caption_projection_dim=HIDDEN, pooled_projection_dim=768,
                                 pos_embed_max_size=32)


def inputs(batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(hidden_states=torch.randn(batch, 16, 32, 32, generator=g),
                encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, HIDDEN, generator=g),
                pooled_projections=torch.randn(batch, 768, generator=g), timestep=torch.full((batch,), 500.0))


def save_backbone(kind: str, layers: int, batch: int, folder: Path) -> None:
    """Quantize the DiT for a W4A4 `kind` (calibrated on one batch) and save it to `folder`."""
    model = build_dit(layers).eval()
    cfg = QuantConfig(**FAST_FIT, weight_only=list(ADALN_W4A16) if kind == KINDS[2] else [])
    chosen, _ = select_layers(model, cfg.resolved())
    with torch.no_grad(), Recording(chosen, sample_tokens=128) as rec:
        model(**inputs(batch, seed=1))
    quantize(model, cfg, calibration=rec.stats())
    save_quantized(model, folder)


def student(kind: str, layers: int, dtype: torch.dtype, checkpointing: bool, backbones: Path):
    """The LoRA student of `kind`; a W4A4 backbone is read from `backbones` (see save_backbone)."""
    model = build_dit(layers).eval()
    if kind.startswith("w4a4"):
        model = load_quantized(backbone_folder(backbones, kind), model)
        attach(model, lora_config(model, rank=16))
    else:
        inject_adapter_in_model(LoraConfig(r=16, lora_alpha=16, target_modules=lora_targets_16bit(model)), model)
    model.to(dtype)  # frozen 16-bit weights (and, W4A4, the layers kept in 16-bit) stored in `dtype`
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    params = trainable_parameters(model)
    for p in params:
        p.data = p.data.float()  # adapters train in fp32 in both variants
    return model, torch.optim.AdamW(params, lr=1e-4)


def backbone_folder(backbones: Path, kind: str) -> Path:
    return backbones / kind.replace(" ", "_")


def lora_targets_16bit(model) -> list[str]:
    """The layers svdtune would quantize and put LoRA on, named in the 16-bit model."""
    import re

    layers, _ = select_layers(model, QuantConfig().resolved())
    return [n for n in layers if re.search(DEFAULT_TARGET, n)]


def train_step(model, optimizer, kw, target, dtype):
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        out = model(**kw, return_dict=False)[0]
    loss = torch.nn.functional.mse_loss(out.float(), target)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def vm_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(kind: str, layers: int, batch: int, dtype: str, steps: int, checkpointing: bool,
                 backbones: Path) -> None:
    """Runs in a fresh process: prints the peak memory of `steps` training steps as JSON."""
    dt = getattr(torch, dtype)
    before = vm_kib("VmRSS")
    model, opt = student(kind, layers, dt, checkpointing, backbones)
    kw, target = inputs(batch), torch.randn(batch, 16, 32, 32)
    train_step(model, opt, kw, target, dt)  # optimizer state exists from here on
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # give back what building the model freed (glibc keeps it otherwise)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM: the 16-bit skeleton the backbone was loaded into is not training memory
    for _ in range(steps):
        train_step(model, opt, kw, target, dt)
    peak = vm_kib("VmHWM")
    print(json.dumps({"peak_mib": peak / 1024, "above_imports_mib": (peak - before) / 1024}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per round and variant")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="compute (autocast) and storage dtype of the frozen 16-bit weights")
    p.add_argument("--no-checkpointing", action="store_true", help="keep every activation (no gradient checkpointing)")
    p.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        kind, backbones = args.memory_child
        return memory_child(kind, args.layers, args.batch, args.dtype, args.steps, not args.no_checkpointing,
                            Path(backbones))
    with tempfile.TemporaryDirectory(prefix="train_cost-") as tmp:
        for k in KINDS[1:]:
            save_backbone(k, args.layers, args.batch, backbone_folder(Path(tmp), k))
        measure(args, Path(tmp))


def measure(args, backbones: Path) -> None:
    dt = getattr(torch, args.dtype)
    models = {k: student(k, args.layers, dt, not args.no_checkpointing, backbones) for k in KINDS}
    kw, target = inputs(args.batch), torch.randn(args.batch, 16, 32, 32)
    for k in KINDS:  # warm-up
        train_step(*models[k], kw, target, dt)
    best = {k: float("inf") for k in KINDS}
    for _ in range(args.rounds):
        for k in KINDS:
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                train_step(*models[k], kw, target, dt)
                times.append(time.perf_counter() - start)
            best[k] = min(best[k], statistics.median(times))
    del models
    memory = {}
    for k in KINDS:
        out = subprocess.run([sys.executable, __file__, "--memory-child", k, str(backbones), "--layers",
                              str(args.layers), "--batch", str(args.batch), "--dtype", args.dtype, "--steps",
                              str(args.steps)] + (["--no-checkpointing"] if args.no_checkpointing else []),
                             check=True, capture_output=True, text=True,
                             env=os.environ | {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)})
        memory[k] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nLoRA r16 training step, SD3-style DiT hidden {HIDDEN}, {args.layers} blocks, batch {args.batch}, "
          f"{args.dtype}, gradient checkpointing {'off' if args.no_checkpointing else 'on'}, "
          f"{torch.get_num_threads()} threads\n")
    print("| backbone | step time (s) | samples/s | peak RSS (MiB) | peak above imports (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for k in KINDS:
        print(f"| {k} | {best[k]:.3f} | {args.batch / best[k]:.2f} | {memory[k]['peak_mib']:.0f} | "
              f"{memory[k]['above_imports_mib']:.0f} |")
    for k in KINDS[1:]:
        print(f"\n{k} / 16-bit: step time {best[k] / best['16-bit']:.2f}x (bar <= 2x), peak memory above imports "
              f"{memory[k]['above_imports_mib'] / memory['16-bit']['above_imports_mib']:.2f}x (bar <= 0.6x), "
              f"peak RSS {memory[k]['peak_mib'] / memory['16-bit']['peak_mib']:.2f}x")


if __name__ == "__main__":
    main()
